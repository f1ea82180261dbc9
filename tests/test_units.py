"""Tests of concentration unit conversion in :mod:`csf_responder.units`."""

from __future__ import annotations

import pytest

from csf_responder.units import conversion_factor, normalise_unit


def test_ng_per_ml_to_pg_per_ml_is_1000():
    assert conversion_factor("ng/mL", "pg/mL") == pytest.approx(1000.0, rel=1e-12)


def test_pg_per_ml_to_ng_per_ml_is_one_thousandth():
    assert conversion_factor("pg/mL", "ng/mL") == pytest.approx(1e-3, rel=1e-12)


def test_round_trip_is_identity():
    there = conversion_factor("ng/mL", "pg/mL")
    back = conversion_factor("pg/mL", "ng/mL")
    assert there * back == pytest.approx(1.0, rel=1e-12)


def test_same_unit_is_one():
    assert conversion_factor("pg/mL", "pg/mL") == 1.0


def test_ng_per_l_equals_pg_per_ml():
    assert conversion_factor("ng/L", "pg/mL") == pytest.approx(1.0, rel=1e-12)
    assert conversion_factor("pg/mL", "ng/L") == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("micro", ["µg/L", "μg/L", "ug/L", "mcg/L", "UG/L"])
def test_microgram_spellings_are_one_unit(micro):
    # 1 ug/L = 1e-6 g/L = 1e-9 g/mL = 1000 pg/mL = 1 ng/mL
    assert conversion_factor(micro, "ng/mL") == pytest.approx(1.0, rel=1e-12)
    assert conversion_factor(micro, "pg/mL") == pytest.approx(1000.0, rel=1e-12)


def test_micro_sign_and_greek_mu_normalise_alike():
    assert normalise_unit("µg/L") == normalise_unit("μg/L") == "ug/l"


@pytest.mark.parametrize("spelling", ["PG/ML", "pg/ml", "Pg/mL", " pg / mL "])
def test_units_are_case_and_space_insensitive(spelling):
    assert conversion_factor(spelling, "ng/mL") == pytest.approx(1e-3, rel=1e-12)


@pytest.mark.parametrize(
    ("source", "target"), [("IU/mL", "pg/mL"), ("pg/mL", "mmol/L"), ("", "pg/mL")]
)
def test_unknown_unit_raises_keyerror_naming_it(source, target):
    with pytest.raises(KeyError) as info:
        conversion_factor(source, target)
    unknown = source if source in {"IU/mL", ""} else target
    assert info.value.args[0] == unknown
