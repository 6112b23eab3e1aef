"""Where a request goes and when: prompt fingerprints and the prefix index, backends and their
load, the dispatcher (placement through `policies/`, the admission queue), health, model lists,
and the upstream client with the scheduling fields it adds."""
