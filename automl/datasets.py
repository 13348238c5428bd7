"""A synthetic customer-churn table, generated here so that tests, demos and
benchmarks need no download and no licence.

It has what real tables bring to an AutoML engine: numbers, low- and
high-cardinality categories, a date, a short free text, an identifier,
missing values, and a binary target (`churned`, "yes"/"no", about 25 % "yes")
that depends on several columns, so a model can learn it but not perfectly.

    python -m automl.datasets churn.csv [--rows 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from .errors import AutoMLError
from .i18n import message

REFERENCE_DATE = pd.Timestamp("2025-01-01")
POSITIVE_RATE = 0.25

_CONTRACTS = (("month-to-month", 0.55, 1.1), ("one-year", 0.25, -0.2), ("two-year", 0.20, -1.2))
_PAYMENTS = (("card", 0.35, -0.2), ("bank transfer", 0.30, -0.3), ("electronic check", 0.25, 0.6), ("mailed check", 0.10, 0.0))
_INTERNET = (("fiber", 0.45, 0.5), ("dsl", 0.40, -0.1), ("none", 0.15, -0.6))
_PLANS = (("basic", 0.5, 0.0), ("plus", 0.35, -0.1), ("premium", 0.15, -0.3))
_SYLLABLES = ("ber", "ville", "mont", "sur", "la", "bourg", "fort", "lac", "roche", "val", "saint", "champ", "bois", "pont", "mar")

# (subject template, churn effect): complaints about price or cancellation go
# with leaving, technical questions much less.
_TICKETS = (
    ("I want to cancel my {product} subscription", 1.6),
    ("Price increase on my {month} invoice", 1.0),
    ("Competitor offers a cheaper {product} plan", 1.3),
    ("Invoice of {month} is wrong by {amount} euros", 0.5),
    ("Internet connection drops every {when}", 0.6),
    ("{product} router not working since {month}", 0.4),
    ("Question about my {month} invoice", 0.0),
    ("Change of address for my {product} line", -0.2),
    ("How do I add a {product} option", -0.5),
    ("Thanks for fixing the {product} outage quickly", -0.6),
)
_WHEN = ("evening", "morning", "weekend", "night", "hour", "day")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December")
_PREFIXES = ("", "", "Re: ", "Urgent: ", "Follow-up: ")
_SUFFIXES = ("", "", " - please call me back", " (second request)", " again", " asap")
_PRODUCTS = ("fiber", "mobile", "TV", "landline", "family", "business", "5G", "streaming")


def make_churn(n_rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A churn table of `n_rows` customers; the same seed gives the same table."""
    rng = np.random.default_rng(seed)
    n = int(n_rows)

    contract, contract_effect = _pick(rng, _CONTRACTS, n)
    payment, payment_effect = _pick(rng, _PAYMENTS, n)
    internet, internet_effect = _pick(rng, _INTERNET, n)
    plan, plan_effect = _pick(rng, _PLANS, n)

    cities = _city_names(rng, 300)
    city_weights = rng.dirichlet(np.full(len(cities), 0.8))
    city_index = rng.choice(len(cities), size=n, p=city_weights)
    city_effect = rng.normal(0.0, 0.35, size=len(cities))[city_index]  # a local competitor here and there

    days_since_signup = rng.integers(0, 7 * 365, size=n)
    signup_date = REFERENCE_DATE - pd.to_timedelta(days_since_signup, unit="D")
    tenure_months = days_since_signup // 30
    age = np.clip(rng.normal(45, 14, size=n).round(), 18, 90)
    monthly_charges = (25 + 30 * (internet == "fiber") + 15 * (internet == "dsl") + 20 * (plan == "premium")
                       + rng.normal(0, 8, size=n)).clip(15, 150).round(2)
    total_charges = (monthly_charges * tenure_months * rng.normal(1.0, 0.03, size=n)).round(2)
    support_calls = rng.poisson(0.6 + 0.8 * (internet == "fiber"), size=n)

    ticket_effect = np.zeros(n)
    tickets = np.full(n, None, dtype=object)
    for i in np.flatnonzero(support_calls > 0):
        template, effect = _TICKETS[rng.integers(len(_TICKETS))]
        tickets[i] = rng.choice(_PREFIXES) + template.format(
            when=rng.choice(_WHEN),
            month=rng.choice(_MONTHS),
            product=rng.choice(_PRODUCTS),
            amount=int(rng.integers(3, 120)),
        ) + rng.choice(_SUFFIXES)
        ticket_effect[i] = effect

    logit = (
        contract_effect
        + payment_effect
        + internet_effect
        + plan_effect
        + city_effect
        + ticket_effect
        + 0.30 * support_calls
        + 0.025 * (monthly_charges - 60)
        - 0.035 * np.minimum(tenure_months, 60)
        - 0.01 * (age - 45)
        # Non-linear parts, as in real churn: the first months are fragile,
        # a high bill hurts most without a contract, the young move on.
        + 0.9 * (tenure_months < 6)
        + 0.9 * ((monthly_charges > 80) & (contract == "month-to-month"))
        + 0.5 * (age < 25)
    )
    logit += _offset_for_rate(logit, POSITIVE_RATE)
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))

    df = pd.DataFrame(
        {
            "customer_id": [f"C{i + 1:06d}" for i in range(n)],
            "signup_date": signup_date.normalize(),
            "age": age,
            "city": np.asarray(cities, dtype=object)[city_index],
            "contract": contract,
            "plan": plan,
            "internet_service": internet,
            "payment_method": payment,
            "monthly_charges": monthly_charges,
            "total_charges": total_charges,
            "support_calls": support_calls,
            "last_ticket_subject": tickets,
            "churned": np.where(churned, "yes", "no"),
        }
    )
    # Missing values as they come: unknown ages and payment methods, no total
    # yet for customers in their first month.
    df.loc[rng.random(n) < 0.06, "age"] = np.nan
    df.loc[rng.random(n) < 0.03, "payment_method"] = None
    df.loc[tenure_months == 0, "total_charges"] = np.nan
    return df


def write_sample(path, n_rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Write `make_churn(n_rows, seed)` in the format the file name asks for."""
    from .tables import write_table

    df = make_churn(n_rows, seed)
    write_table(df, path)
    return df


def _pick(rng, choices, n):
    names = np.asarray([c[0] for c in choices], dtype=object)
    weights = np.asarray([c[1] for c in choices])
    effects = np.asarray([c[2] for c in choices])
    index = rng.choice(len(choices), size=n, p=weights / weights.sum())
    return names[index], effects[index]


def _city_names(rng, count):
    names = set()
    while len(names) < count:
        parts = rng.choice(_SYLLABLES, size=rng.integers(2, 4))
        names.add("".join(parts).capitalize())
    return sorted(names)


def _offset_for_rate(logit, rate):
    """Shift the logits so that the expected share of positives is `rate`."""
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(1 / (1 + np.exp(-(logit + middle)))) < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m automl.datasets", description="Write the synthetic churn table.")
    parser.add_argument("out", help=".csv, .csv.gz, .tsv, .parquet or .xlsx")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        write_sample(args.out, args.rows, args.seed)
    except AutoMLError as error:
        print(f"{parser.prog}: error: {error.message()}", file=sys.stderr)
        return 2
    print(message("sample_written", path=args.out, rows=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
