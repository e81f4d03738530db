"""How much CPU one credential check costs: HMAC-SHA256 (machine secrets) vs argon2id.

Run: ``python -m bench.secret_hashing [--rounds N]``. The point it backs up (see the
``auth.secrets`` docstring): a 256-bit random secret cannot be brute-forced whatever
the hash, so its check should be as cheap as HMAC; argon2 is for human passwords and,
per request, would be a CPU lever for anyone who can send bad credentials.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from auth.passwords import DEFAULT_PARAMS, PasswordHasher, VerifyGuard
from auth.secrets import generate_secret, hmac_secret, verify_secret


def _per_call_seconds(action: Callable[[], object], rounds: int, batch: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            action()
        samples.append((time.perf_counter() - start) / batch)
    return samples


def measure(rounds: int) -> dict[str, dict[str, float]]:
    pepper = generate_secret().encode()
    secret = generate_secret()
    stored = hmac_secret(pepper, secret)
    hasher = PasswordHasher(DEFAULT_PARAMS, guard=VerifyGuard(size=1, timeout=60))
    password_hash = hasher.hash("correct horse battery")
    hmac_samples = _per_call_seconds(
        lambda: verify_secret(pepper, secret, stored), rounds, batch=10_000
    )
    argon_samples = _per_call_seconds(
        lambda: hasher.verify(password_hash, "correct horse battery"), rounds, batch=5
    )
    results = {}
    for name, samples in (("hmac_sha256_verify", hmac_samples), ("argon2id_verify", argon_samples)):
        results[name] = {
            "median_us": statistics.median(samples) * 1e6,
            "min_us": min(samples) * 1e6,
            "checks_per_core_per_s": 1 / statistics.median(samples),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = measure(args.rounds)
    ratio = results["argon2id_verify"]["median_us"] / results["hmac_sha256_verify"]["median_us"]
    if args.json:
        print(json.dumps({**results, "argon2_over_hmac": ratio}))
        return
    p = DEFAULT_PARAMS
    print(f"argon2id parameters: m={p.memory_cost} KiB, t={p.time_cost}, p={p.parallelism}")
    for name, row in results.items():
        print(
            f"{name:20} median {row['median_us']:>12.2f} µs   min {row['min_us']:>12.2f} µs"
            f"   {row['checks_per_core_per_s']:>12,.0f} checks/s per core"
        )
    print(f"argon2id costs {ratio:,.0f}x an HMAC check")


if __name__ == "__main__":
    main()
