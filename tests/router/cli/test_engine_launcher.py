import json

from triage_router.router.cli.engine_launcher import EngineProcess
from triage_router.router.config_loader import parse_config


def _engine(tmp_path, extra: str):
    (tmp_path / "tokenizer.json").write_text("{}")
    config = parse_config(f'[[backends]]\nname = "e"\nurl = "http://127.0.0.1:8100"\nkind = "engine"\nlaunch = true\n'
                          f'tokenizer = "{tmp_path}"\n{extra}')
    return EngineProcess(config.backends[0])


def test_a_launched_engine_publishes_the_events_its_backend_subscribes_to(tmp_path):
    engine = _engine(tmp_path, 'kv_events = { endpoint = "tcp://127.0.0.1:5557", replay_endpoint = "tcp://127.0.0.1:5558" }')
    flag = engine.command.index("--kv-events-config")
    # Bound on a wildcard address, as vLLM's rule (and so our engine's) binds nothing else.
    assert json.loads(engine.command[flag + 1]) == {
        "enable_kv_cache_events": True, "publisher": "zmq", "endpoint": "tcp://*:5557",
        "replay_endpoint": "tcp://*:5558", "topic": ""}


def test_launch_args_that_configure_events_win(tmp_path):
    engine = _engine(tmp_path, 'kv_events = "tcp://127.0.0.1:5557"\n'
                               'launch_args = ["--kv-events-config", "{\\"enable_kv_cache_events\\": false}"]')
    assert engine.command.count("--kv-events-config") == 1
    assert engine.command[-1] == '{"enable_kv_cache_events": false}'
