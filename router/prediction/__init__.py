"""How long the answer will be: the output-length predictor (`length`) and the features it reads
from a request (`features`)."""
