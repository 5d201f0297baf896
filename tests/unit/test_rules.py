"""Rules files: every validation error names the file, the rule and the field."""

import pytest

from scoring.errors import RulesError
from scoring.rules import parse_rules

BASE = '[[engagement_rules]]\nid = "any"\nevent = "web_visit"\nurl = "/*"\npoints = 1\n'


def test_default_rules_are_valid(default_rules) -> None:  # type: ignore[no-untyped-def]
    assert default_rules.mql_threshold == 75
    assert default_rules.nurture_threshold == 40
    assert default_rules.version.startswith("default-2026.11+")


def test_version_changes_with_content() -> None:
    assert parse_rules(BASE).version != parse_rules(BASE + "\n# changed\n").version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("this is = = not toml", "rules.toml: not valid TOML"),
        ("colour = 1\n", "unknown top-level key 'colour'"),
        (
            "[thresholds]\nmql = 50\nnurture = 60\n",
            "[thresholds]: field 'nurture': must be above 0 and below mql",
        ),
        ("[thresholds]\nmql = 'high'\n", "[thresholds]: field 'mql': expected a number"),
        ("[fit]\nmax = 45\n", "[fit]: field 'max': must stay below the nurture threshold"),
        ("[fit]\nmax = 5\n[engagement]\nmax = 20\n", "cannot reach mql"),
        ("[engagement]\nhalf_life = 'a month'\n", "[engagement]: field 'half_life': not a duration"),
        (
            '[[fit_rules]]\nid = "big"\nattribute = "shoe_size"\nin = ["xl"]\npoints = 1\n',
            "fit rule 'big' (fit_rules[0]): field 'attribute': unknown attribute 'shoe_size'",
        ),
        (
            '[[fit_rules]]\nid = "vp"\nattribute = "seniority"\nin = ["vp"]\npoints = "ten"\n',
            "fit rule 'vp' (fit_rules[0]): field 'points': expected a number, got 'ten'",
        ),
        (
            '[[fit_rules]]\nid = "vp"\nattribute = "seniority"\npoints = 3\n',
            "fit rule 'vp' (fit_rules[0]): field 'in': give exactly one condition",
        ),
        (
            '[[fit_rules]]\nid = "r"\nattribute = "industry"\nmin = 3\npoints = 3\n',
            "field 'min': a range applies only to the numeric attribute 'company_size'",
        ),
        (
            '[[fit_rules]]\nid = "r"\nattribute = "company_size"\nmin = 300\nmax = 10\npoints = 3\n',
            "field 'min': min 300.0 is greater than max 10.0",
        ),
        (
            '[[engagement_rules]]\nid = "x"\nevent = "tweet"\npoints = 1\n',
            "engagement rule 'x' (engagement_rules[0]): field 'event': unknown event 'tweet'",
        ),
        (
            '[[engagement_rules]]\nid = "x"\nevent = "web_visit"\npoints = 1\nwhen = { colour = "red" }\n',
            "engagement rule 'x' (engagement_rules[0]): field 'when.colour': web_visit events have no such field",
        ),
        (
            '[[engagement_rules]]\nid = "x"\nevent = "web_visit"\nurl = "pricing"\npoints = 1\n',
            "field 'url': URL patterns match the path and start with '/'",
        ),
        (
            '[[engagement_rules]]\nid = "x"\nevent = "content_download"\nurl = "/x"\npoints = 1\n',
            "field 'url': content_download events have no url",
        ),
        (
            '[[engagement_rules]]\nid = "x"\nevent = "web_visit"\npoints = 1\ncap = { count = 0, window = "1d" }\n',
            "engagement rule 'x' (engagement_rules[0]) cap: field 'count': must be at least 1",
        ),
        (
            '[[engagement_rules]]\nid = "x"\nevent = "web_visit"\npoints = 1\ncap = { count = 2, window = "soon" }\n',
            "cap: field 'window': not a duration",
        ),
        (
            '[[engagement_rules]]\nid = "x"\nevent = "web_visit"\npoints = 1\ngroup = "social"\n',
            "field 'group': no half-life for group 'social'",
        ),
        (
            '[[engagement_rules]]\nid = "x"\nevent = "web_visit"\npoints = 1\nweight = 2\n',
            "field 'weight': unknown field",
        ),
        (BASE + BASE, "rule id 'any' is used twice"),
    ],
)
def test_each_validation_error_is_precise(text: str, expected: str) -> None:
    with pytest.raises(RulesError) as error:
        parse_rules(text, "rules.toml")
    assert expected in str(error.value)
    assert str(error.value).startswith("rules.toml: ")


def test_job_title_contains_matches_whole_words() -> None:
    text = '[[fit_rules]]\nid = "cto"\nattribute = "job_title"\ncontains = ["cto"]\npoints = 5\n'
    rule = parse_rules(text).fit_rules[0]
    assert rule.matches("CTO & Co-founder")
    assert not rule.matches("Director of Sales")


def test_url_patterns_are_globs_on_the_lowercased_path() -> None:
    rule = parse_rules(
        '[[engagement_rules]]\nid = "p"\nevent = "web_visit"\nurl = ["/pricing", "/pricing/*"]\npoints = 1\n'
    ).engagement_rules[0]
    assert rule.matches({"path": "/pricing"})
    assert rule.matches({"path": "/pricing/enterprise"})
    assert not rule.matches({"path": "/pricingx"})
    assert not rule.matches({"path": "/blog/pricing"})
