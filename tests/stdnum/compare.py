#!/usr/bin/env python3
"""Compare kycq's resident ID number validation with python-stdnum's `stdnum.cn.ric`.

Generates numbers of every kind (real region codes around their years of use, made-up codes,
wrong check characters, impossible and out-of-range birth dates, full-width and other digit
forms), asks both for a verdict and explains every disagreement by one of the documented
classes below. Any disagreement no class explains fails the run.

Usage: compare.py --kycq path/to/id_verdicts [--count N] [--seed S] [--today YYYY-MM-DD]
"""

import argparse
import collections
import datetime
import random
import subprocess
import sys

from stdnum import numdb
from stdnum.cn import ric

# The documented classes where kycq deliberately differs from stdnum (docs/src/reference/id-numbers.md).
CLASSES = {
    "before_1900": "birth date before 1900: kycq refuses, stdnum accepts",
    "future_birth": "birth date after today: kycq refuses, stdnum accepts",
    "code_introduced_after_birth": (
        "region code introduced after the birth year: kycq accepts (the number is assigned at "
        "registration, with the code in use then), stdnum refuses"
    ),
    "abolished_grace": (
        "born in the year after the region code was abolished: kycq accepts (offices change over "
        "in the months after a merger), stdnum refuses"
    ),
    "code_newer_than_table": (
        "a code the table does not know, in a known province, for someone born after the "
        "table's last year: kycq accepts (it may be newer than the data), stdnum refuses"
    ),
    "residence_permit": (
        "810000/820000/830000 (HK, Macao, Taiwan residents' residence permits) whatever the "
        "birth year: kycq accepts, stdnum refuses"
    ),
    "full_width_x": "full-width Ｘ/ｘ as the check character: kycq reads it as X, stdnum refuses",
    "other_digit_forms": (
        "mathematical digit forms (𝟏, 𝟙, ...): kycq refuses, stdnum reads them as digits"
    ),
}

LOC = numdb.get("cn/loc")
MATH_DIGIT_ZEROS = (0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6)


def periods(code):
    """The (first, last) years of use stdnum's table gives a six-digit code; [] if unknown."""
    info = {k: v for _, props in LOC.info(code) for k, v in props.items()}
    if "county" not in info:
        return []
    out = []
    for county in info["county"].split(","):
        if not county.startswith("["):
            out.append((None, None))
            continue
        start, end = county[1:].split("]")[0].split("-")
        out.append((int(start) if start else None, int(end) if end else None))
    return out


def all_codes():
    """Every six-digit code in stdnum's table, read from its prefix tree."""
    codes = []
    for length, low, high, _props, children in LOC.prefixes:
        assert length == 2 and low == high, (length, low, high)
        for c_length, c_low, c_high, c_props, _ in children:
            assert c_length == 4, c_length
            if "county" in c_props:
                codes += [f"{low}{n:04d}" for n in range(int(c_low), int(c_high) + 1)]
    return sorted(codes)


CODES = all_codes()
# The latest year stdnum's table records a change in.
DATA_YEAR = max(y for c in CODES for p in periods(c) for y in p if y is not None)


def with_check(first17):
    return first17 + ric.calc_check_digit(first17 + "0")


def date_str(d):
    return d.strftime("%Y%m%d")


class Generator:
    def __init__(self, rng, today, codes):
        self.rng = rng
        self.today = today
        self.codes = codes

    def seq(self):
        return f"{self.rng.randrange(1000):03d}"

    def date_between(self, y0, y1):
        y = self.rng.randint(y0, y1)
        start = datetime.date(y, 1, 1)
        end = datetime.date(y, 12, 31)
        return start + datetime.timedelta(days=self.rng.randrange((end - start).days + 1))

    def real_code_any_year(self):
        code = self.rng.choice(self.codes)
        d = self.date_between(1900, self.today.year)
        return with_check(code + date_str(d) + self.seq())

    def real_code_edge_year(self):
        code = self.rng.choice(self.codes)
        years = []
        for start, end in periods(code):
            for y in (start, end):
                if y:
                    years += [y - 1, y, y + 1]
        year = self.rng.choice(years) if years else self.rng.randint(1900, self.today.year)
        year = min(max(year, 1900), self.today.year)
        d = self.date_between(year, year)
        return with_check(code + date_str(d) + self.seq())

    def made_up_code(self):
        prov = self.rng.choice([11, 12, 13, 21, 31, 44, 51, 65, 71, 81, 82, 83, 10, 90, 99])
        code = f"{prov:02d}{self.rng.randrange(10000):04d}"
        d = self.date_between(1930, self.today.year)
        return with_check(code + date_str(d) + self.seq())

    def random_digits(self):
        return with_check("".join(self.rng.choice("0123456789") for _ in range(17)))

    def wrong_check(self):
        n = self.real_code_any_year()
        return n[:17] + self.rng.choice([c for c in "0123456789X" if c != n[17]])

    def odd_date(self):
        code = self.rng.choice(self.codes)
        kind = self.rng.randrange(4)
        if kind == 0:
            date = f"{self.rng.randint(1850, 1899)}0615"
        elif kind == 1:
            date = date_str(self.today + datetime.timedelta(days=self.rng.randint(1, 3000)))
        elif kind == 2:
            date = f"{self.rng.randint(1950, 2020)}{self.rng.choice(['0230', '0431', '1301', '0000', '0100'])}"
        else:
            date = f"{self.rng.choice([1900, 2000, 2004, 2100, 1996, 1997])}0229"
        return with_check(code + date + self.seq())

    def residence_permit(self):
        code = self.rng.choice(["810000", "820000", "830000"])
        d = self.date_between(1920, self.today.year)
        return with_check(code + date_str(d) + self.seq())

    def full_width(self):
        n = self.real_code_edge_year()
        wide = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in n)
        if wide.endswith("X") and self.rng.random() < 0.7:
            wide = wide[:-1] + self.rng.choice(["Ｘ", "ｘ"])
        return wide

    def other_digits(self):
        n = self.real_code_edge_year()
        zero = self.rng.choice(MATH_DIGIT_ZEROS)
        i = self.rng.randrange(17)
        return n[:i] + chr(zero + int(n[i])) + n[i + 1:]

    def odd_shape(self):
        n = self.real_code_any_year()
        kind = self.rng.randrange(4)
        if kind == 0:
            return n[:17]
        if kind == 1:
            return n + "0"
        if kind == 2:
            return n[:-1] + "x" if n.endswith("X") else " " + n + " "
        return n[:6] + n[8:17]  # a 15-digit (first-generation) number

    def sample(self):
        kinds = [
            (30, self.real_code_any_year),
            (25, self.real_code_edge_year),
            (10, self.made_up_code),
            (5, self.random_digits),
            (8, self.wrong_check),
            (8, self.odd_date),
            (4, self.residence_permit),
            (4, self.full_width),
            (3, self.other_digits),
            (3, self.odd_shape),
        ]
        r = self.rng.randrange(sum(w for w, _ in kinds))
        for w, make in kinds:
            if r < w:
                return make()
            r -= w
        raise AssertionError


def stdnum_verdict(number):
    try:
        return True, ric.validate(number)
    except Exception as e:  # noqa: BLE001 - stdnum raises KeyError for unknown counties
        return False, type(e).__name__


def explain(number, kycq_ok, today):
    """The documented class of a disagreement, or None."""
    compact = ric.compact(number)
    if any(0x1D7CE <= ord(c) <= 0x1D7FF for c in number) and not kycq_ok:
        return "other_digit_forms"
    if ("Ｘ" in number or "ｘ" in number) and kycq_ok:
        return "full_width_x"
    if len(compact) != 18 or not compact[:17].isdigit():
        return None
    try:
        birth = ric.get_birth_date(compact)
    except Exception:  # noqa: BLE001
        return None
    if birth.year < 1900 and not kycq_ok:
        return "before_1900"
    if birth > today and not kycq_ok:
        return "future_birth"
    if kycq_ok and compact[:6] in ("810000", "820000", "830000"):
        return "residence_permit"
    if kycq_ok and compact[:6] not in ("810000", "820000", "830000") and not periods(compact[:6]):
        known_province = any(c.startswith(compact[:2]) for c in CODES)
        if known_province and birth.year > DATA_YEAR:
            return "code_newer_than_table"
    if kycq_ok:
        ps = periods(compact[:6])
        if any(e is not None and birth.year == e + 1 for s, e in ps) and not any(
            (s is None or s <= birth.year) and (e is None or birth.year <= e) for s, e in ps
        ):
            return "abolished_grace"
        covering = any(
            (s is None or s <= birth.year) and (e is None or birth.year <= e) for s, e in ps
        )
        later = any(s is not None and s > birth.year and (e is None or e >= birth.year) for s, e in ps)
        if not covering and later:
            return "code_introduced_after_birth"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kycq", required=True, help="path to the id_verdicts example binary")
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--today", default=datetime.date.today().isoformat())
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    today = datetime.date.fromisoformat(args.today)
    print(f"seed {seed}, {args.count} numbers, today {today} (repeat with --seed {seed} --today {today})")

    gen = Generator(random.Random(seed), today, CODES)
    numbers = [gen.sample() for _ in range(args.count)]
    run = subprocess.run(
        [args.kycq, today.isoformat()],
        input="\n".join(numbers) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    verdicts = run.stdout.splitlines()
    assert len(verdicts) == len(numbers), (len(verdicts), len(numbers))

    agree = 0
    accepted = collections.Counter()
    classes = collections.Counter()
    unexplained = []
    for number, verdict in zip(numbers, verdicts):
        kycq_ok = verdict.startswith("ok ")
        std_ok, std_value = stdnum_verdict(number)
        accepted["kycq"] += kycq_ok
        accepted["stdnum"] += std_ok
        if kycq_ok == std_ok and (not kycq_ok or verdict[3:] == std_value):
            agree += 1
            continue
        why = explain(number, kycq_ok, today)
        if why is None:
            unexplained.append((number, verdict, std_value))
        else:
            classes[why] += 1

    n = len(numbers)
    print(f"accepted: kycq {accepted['kycq']}, stdnum {accepted['stdnum']}")
    print(f"agree on {agree} of {n} ({100 * agree / n:.1f} %)")
    for name, text in CLASSES.items():
        print(f"  documented difference {name:28} {classes[name]:6}  ({text})")
    explained = agree + sum(classes.values())
    print(f"agree or documented: {explained} of {n} ({100 * explained / n:.2f} %)")
    if unexplained:
        print(f"{len(unexplained)} unexplained disagreements, first 20:")
        for number, verdict, std in unexplained[:20]:
            print(f"  {number!r}: kycq {verdict!r}, stdnum {std!r}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
