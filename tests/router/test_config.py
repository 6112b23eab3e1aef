from __future__ import annotations

from pathlib import Path

import pytest

from triage_router.router.config import ConfigError
from triage_router.router.config_loader import load_config, parse_config, resolve_config_path


def test_defaults_fill_every_option() -> None:
    config = parse_config("")
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.priority.default == 2 and config.priority.header == "x-priority"
    assert config.backends == [] and config.api_keys == []


def test_the_shipped_config_parses() -> None:
    config = load_config(Path(__file__).parents[2] / "config.toml")
    assert config.backends and all(b.url.startswith("http") for b in config.backends)


def test_backend_defaults_and_trailing_slash() -> None:
    config = parse_config('[[backends]]\nname = "a"\nurl = "http://h:1/"\n')
    backend = config.backends[0]
    assert backend.url == "http://h:1"
    assert backend.models == [] and not backend.serves("anything")  # it serves what it lists
    assert backend.kind == "openai" and backend.scheduling == "fcfs"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[backends]]\nname = "a"\nurl = "http://ok"\n[[backends]]\nname = "b"\nurl = "ftp://x"\n',
         "backends[1].url: expected an http(s) URL"),
        ('[server]\nport = "eighty"\n', "server.port: expected `int`, got `str`"),
        ("[server]\nprot = 1\n", "server: object contains unknown field `prot`"),
        ("[priority]\ndefault = 7\n", "priority.default: expected `int` <= 4"),
        ('[[backends]]\nurl = "http://x"\n', "backends[0]: object missing required field `name`"),
        ('[[backends]]\nname = "a"\nurl = "http://x"\nkind = "tgi"\n', "backends[0].kind: invalid enum value 'tgi'"),
        ('[[backends]]\nname = "a"\nurl = "http://x"\n[[backends]]\nname = "a"\nurl = "http://y"\n',
         "backends[1].name: duplicate backend name 'a'"),
        ('[[api_keys]]\nkey = "k"\nmax_priority = 5\n', "api_keys[0].max_priority: expected `int` <= 4"),
        ("server = [", "not valid TOML"),
        ('[admission]\nordering = "lottery"\n', "admission.ordering: expected one of fcfs, sjf"),
        ("[admission]\nheadroom = [0, 0, 0, 0, 1.0]\n", "admission.headroom[4]: expected a fraction in [0, 1)"),
        ("[routing]\nmetrics_fast_interval_s = 2.0\n", "routing.metrics_fast_interval_s: expected at most"),
        ("[routing]\nmetrics_stale_s = 1.0\n", "routing.metrics_stale_s: expected more than metrics_interval_s"),
    ],
)
def test_errors_name_the_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).startswith(message)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = -1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: server.port: expected `int` >= 0"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")


def test_config_path_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIAGE_CONFIG", raising=False)
    assert resolve_config_path(None) == Path("config.toml")
    monkeypatch.setenv("TRIAGE_CONFIG", "/etc/triage.toml")
    assert resolve_config_path(None) == Path("/etc/triage.toml")
    assert resolve_config_path("mine.toml") == Path("mine.toml")


@pytest.mark.parametrize(("models", "message"), [
    ('[[models]]\nname = "a"\nserve_as = "a"\n', "its own alias"),
    ('[[models]]\nname = "a"\n', "expected `serve_as`, `fallback` or both"),
    ('[[models]]\nname = "a"\nserve_as = "b"\n[[models]]\nname = "a"\nfallback = "c"\n', "unique"),
])
def test_model_aliases_and_fallbacks_are_checked(models: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(models)


def test_a_key_may_be_given_hashed_or_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    digest = hashlib.sha256(b"sk-secret").hexdigest()
    (tmp_path / "key").write_text("sk-secret\n")
    monkeypatch.setenv("TRIAGE_TEST_KEY", "sk-secret")
    for form in (f'key = "sk-secret"', f'key_sha256 = "{digest.upper()}"', 'key_env = "TRIAGE_TEST_KEY"',
                 f'key_file = "{tmp_path / "key"}"'):
        (entry,) = parse_config(f"[[api_keys]]\n{form}\n").api_keys
        assert entry.key_sha256 == digest and entry.key == ""  # only the hash is kept
    for bad, message in (('key = "a"\nkey_env = "X"', "exactly one"), ('key_sha256 = "abc"', "64 hex"),
                         ('key_env = "TRIAGE_NO_SUCH_VARIABLE"', "unset"), ('key_file = "/no/such/file"', "cannot read")):
        with pytest.raises(ConfigError, match=message):
            parse_config(f"[[api_keys]]\n{bad}\n")
    with pytest.raises(ConfigError, match="duplicate"):
        parse_config(f'[[api_keys]]\nkey = "sk-secret"\n[[api_keys]]\nkey_sha256 = "{digest}"\n')


def _kv_backend(lines: str) -> str:
    return f'[[backends]]\nname = "a"\nurl = "http://h:1"\n{lines}\n'


def test_kv_events_as_a_string_or_a_table(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    plain = parse_config(_kv_backend(f'kv_events = "tcp://h:5557"\ntokenizer = "{tmp_path}"'))
    assert plain.backends[0].events.endpoint == "tcp://h:5557" and plain.backends[0].events.replay_endpoint == ""
    table = parse_config(_kv_backend(
        f'kv_events = {{ endpoint = "tcp://h:5557", replay_endpoint = "tcp://h:5558", topic = "kv" }}\n'
        f'tokenizer = "{tmp_path}"'))
    assert (table.backends[0].events.replay_endpoint, table.backends[0].events.topic) == ("tcp://h:5558", "kv")
    assert parse_config(_kv_backend("")).backends[0].events is None


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('kv_events = "tcp://*:5557"\ntokenizer = "{dir}"', "not vLLM's tcp://\\*"),
        ('kv_events = "http://h:5557"\ntokenizer = "{dir}"', "kv_events.endpoint: expected tcp://host:port"),
        ('kv_events = {{ endpoint = "tcp://h:1", replay_endpoint = "h:2" }}\ntokenizer = "{dir}"',
         "kv_events.replay_endpoint"),
        ('kv_events = "tcp://h:5557"', "kv_events needs the model's tokenizer"),
        ('kv_events = "tcp://h:5557"\ntokenizer = "/nonexistent"', "no tokenizer.json in '/nonexistent'"),
        ('tokenizer = "{dir}"', "only read with kv_events"),
    ],
)
def test_kv_events_errors(tmp_path: Path, lines: str, message: str) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match=message):
        parse_config(_kv_backend(lines.format(dir=tmp_path)))
