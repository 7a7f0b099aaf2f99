"""The SecAgg+ run-config keys the secagg tests start from (the product defaults)."""

BASE = {
    "num-shares": 3,
    "reconstruction-threshold": 2,
    "clipping-range": 8.0,
    "quantization-range": 2**24,
    "modulus-range": 2**32,
    "max-weight": 100000.0,
    "timeout": 120.0,
}
