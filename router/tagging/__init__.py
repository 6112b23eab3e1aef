"""How urgent a request is: the priority header, then the configured rules, then a tagger (an
embedding classifier or a language model), each decision with its source."""
