"""The HTML report: TRIPOD+AI section order, escaping, self-containment, number formats,
atomic writes, and (in headless Chromium) that every embedded figure renders."""

from __future__ import annotations

import base64
import io
import math
import os
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from csf_responder import report as report_module
from csf_responder.metrics import MetricCI
from csf_responder.report import (
    SECTIONS,
    Counts,
    FamilyRow,
    LabelDefinition,
    ReportInputs,
    SampleSize,
    ValidationSettings,
    format_ci,
    render_report,
    write_report,
)

EVIL = "<script>alert('x')</script>"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _png(label: str, colour: str) -> bytes:
    """A small real PNG drawn by matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1.5), dpi=50)
    axes.plot([0, 1], [0, 1], color=colour)
    axes.set_title(label)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    return [_png(name, colour) for name, colour in
            (("ROC", "C0"), ("PR", "C1"), ("calibration", "C2"), ("SHAP", "C3"))]


def _metrics(auc: MetricCI, delta: MetricCI | None) -> dict[str, MetricCI]:
    metrics = {
        "roc_auc": auc,
        "pr_auc": MetricCI(0.61, 0.44, 0.79),
        "brier": MetricCI(0.21, 0.17, 0.26),
        "calibration_intercept": MetricCI(-0.12, -0.61, 0.40),
        "calibration_slope": MetricCI(0.81, 0.22, 1.63),
        "sensitivity": MetricCI(0.70, 0.50, 0.86),
        "specificity": MetricCI(0.66, 0.48, 0.81),
        "ppv": MetricCI(0.58, 0.40, 0.75),
        "npv": MetricCI(0.77, 0.59, 0.90),
        "mcc": MetricCI(0.35, 0.05, 0.60),
    }
    if delta is not None:
        metrics["delta_auc_vs_clinical"] = delta
    return metrics


@pytest.fixture
def inputs(tmp_path, pngs) -> ReportInputs:
    """A report of a small run; one figure given as a path, the others as bytes."""
    roc_path = tmp_path / "roc.png"
    roc_path.write_bytes(pngs[0])
    families = [
        FamilyRow("elastic_net", "model", {"C": 0.123456, "l1_ratio": 0.5},
                  _metrics(MetricCI(0.72, 0.55, 0.88), MetricCI(0.06, -0.05, 0.18)),
                  {"roc_auc": 0.69, "calibration_slope": 0.74, "brier": 0.22}, 0.012),
        FamilyRow(EVIL, "model", {"max_depth": 2},
                  _metrics(MetricCI(0.64, 0.47, 0.80), MetricCI(-0.05, -0.20, 0.10)),
                  {"roc_auc": 0.61}, None),
        FamilyRow("clinical_only", "reference", {"C": 1.0},
                  _metrics(MetricCI(0.66, 0.49, 0.82), None), {}, None),
    ]
    return ReportInputs(
        title="Responder model, cohort phase2",
        date="2025-11-23 09:30",
        cohort="phase2 & <friends>",
        data_digest="abc123",
        config_digest="def456",
        git_commit="0123456789abcdef-dirty",
        counts=Counts(patients_per_arm={"MSC": 64, "control": 32},
                      labelled_per_arm={"MSC": 52, "control": 27},
                      excluded={"<b>too few visits</b> in the lead-in": 9, "withdrew": 3},
                      rejected_rows={"csf.csv": 4, "visits.csv": 0}),
        label=LabelDefinition(source="slope", cutoff=0.5, horizon_months=6),
        censoring="lloq_sqrt2",
        plate_correction="median",
        analytes=["TGF-beta1", "MCP-1", "VEGF", "Angiogenin"],
        features=["log_TGF-beta1_baseline", "log_ratio_TGF-beta1/MCP-1_baseline",
                  "change_VEGF", "age", "feature<with>markup"],
        validation=ValidationSettings(outer_splits=5, repeats=5, inner_splits=5,
                                      n_bootstrap=2000, ci_level=0.95, n_optimism=200,
                                      permutation_test=True, n_permutations=200,
                                      threshold=0.5),
        families=families,
        best_family="elastic_net",
        sample_size=SampleSize(riley_minimum_n=210, n_parameters=14, n_labelled=52,
                               anticipated_r2_cs=0.121),
        responder_rate={"MSC": MetricCI(0.40, 0.28, 0.53), "control": MetricCI(0.15, 0.06, 0.33)},
        figures={
            "performance": [("ROC curves, out of fold", roc_path),
                            ("Precision-recall curves", pngs[1]),
                            ('Calibration "curves" & decision curves', pngs[2])],
            "explanations": [(f"SHAP summary of {EVIL}", pngs[3])],
        },
    )


def _n_figures(inputs: ReportInputs) -> int:
    return sum(len(entries) for entries in inputs.figures.values())


# ----------------------------------------------------------------------------- content


def test_sections_follow_the_tripod_order(inputs):
    html = render_report(inputs)
    found = re.findall(r'<section id="([^"]+)"><h2>([^<]+)<', html)
    assert found == [(section, heading) for section, heading, _ in SECTIONS]
    headings = [heading for _, heading, _ in SECTIONS]
    assert headings[:2] == ["Summary", "Source of data and participants"]
    assert headings.index("Outcome") < headings.index("Predictors") < headings.index(
        "Sample size") < headings.index("Missing data") < headings.index("Analytical methods")
    assert headings[-4:] == ["Model development", "Performance", "Explanations", "Limitations"]
    # SHAP figures sit in the explanations section, the curves in performance
    explanations = html.split('<section id="explanations">')[1].split("</section>")[0]
    assert explanations.count("<img ") == 1
    performance = html.split('<section id="performance">')[1].split("</section>")[0]
    assert performance.count("<img ") == 3


def test_values_from_data_are_escaped(inputs):
    html = render_report(inputs)
    assert EVIL not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert html.count("<script") == 1  # only the inline image check
    assert "phase2 &amp; &lt;friends&gt;" in html
    assert "&lt;b&gt;too few visits&lt;/b&gt;" in html
    assert "feature&lt;with&gt;markup" in html
    assert 'Calibration &quot;curves&quot; &amp; decision curves' in html
    assert "<friends>" not in html and "<b>too few visits</b>" not in html


def test_the_page_is_self_contained(inputs, pngs):
    html = render_report(inputs)
    sources = re.findall(r'\bsrc\s*=\s*"([^"]*)"', html, flags=re.IGNORECASE)
    assert len(sources) == _n_figures(inputs)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = [base64.b64decode(s.split(",", 1)[1]) for s in sources]
    assert embedded == pngs  # in page order, the path read and embedded like the bytes
    links = re.findall(r'\bhref\s*=\s*"([^"]*)"', html, flags=re.IGNORECASE)
    assert links and all(link.startswith("#") for link in links)  # in-page anchors only
    lowered = html.lower()
    for forbidden in ('src="http', 'href="http', "<link", "@import", "url(", "<iframe",
                      "<object", "<embed", "src='", "href='", "<script src"):
        assert forbidden not in lowered, forbidden
    assert "img-src data:" in html  # and the Content-Security-Policy forbids the rest


def test_numbers_are_formatted_with_intervals(inputs):
    html = render_report(inputs)
    assert "0.72 (0.55-0.88)" in html  # AUC of the best family
    assert "-0.05 (-0.20 to 0.10)" in html  # a negative bound: "to", not a dash
    assert "40% (28-53%)" in html and "15% (6-33%)" in html  # responder rates
    assert "0.012" in html and "not run" in html  # permutation p-values
    assert "<code>C</code> = 0.1235" in html  # chosen hyperparameters
    assert "0.69" in html  # optimism-corrected AUC
    summary = html.split('<section id="summary">')[1].split("</section>")[0]
    assert "elastic_net" in summary and "0.72 (0.55-0.88)" in summary


def test_format_ci():
    assert format_ci(MetricCI(0.7234, 0.551, 0.8849)) == "0.72 (0.55-0.88)"
    assert format_ci(MetricCI(-0.05, -0.2, 0.1)) == "-0.05 (-0.20 to 0.10)"
    assert format_ci(MetricCI(0.4, 0.281, 0.532), percent=True) == "40% (28-53%)"
    assert format_ci(MetricCI(0.5, math.nan, math.nan)) == "0.50"
    assert format_ci(MetricCI(math.nan, math.nan, math.nan)) == "n/a"
    assert format_ci(None) == "n/a"


def test_riley_warning_only_below_the_minimum(inputs):
    below = render_report(inputs)
    assert "Below the minimum sample size" in below
    enough = replace(inputs, sample_size=SampleSize(riley_minimum_n=40, n_parameters=14,
                                                    n_labelled=52))
    assert "Below the minimum sample size" not in render_report(enough)


def test_limitations_and_simulated_data(inputs):
    html = render_report(inputs)
    limitations = html.split('<section id="limitations">')[1].split("</section>")[0]
    assert "Prognosis and treatment benefit are mixed" in limitations
    assert "CSF only in the treated arm" in limitations
    assert "Simulated data" not in html
    simulated = render_report(replace(inputs, simulated=True))
    assert simulated.count("Simulated data") >= 2  # in the summary and the limitations


def test_noise_floor_names_the_control_rate(inputs):
    html = render_report(inputs)
    outcome = html.split('<section id="outcome">')[1].split("</section>")[0]
    assert "Noise floor" in outcome and "15% (6-33%)" in outcome
    assert "50%" in outcome and "6 months" in outcome


@pytest.mark.parametrize("change, message", [
    ({"best_family": "missing"}, "best family"),
    ({"figures": {"appendix": [("x", PNG_SIGNATURE + PNG_END)]}}, "unknown sections"),
    ({"figures": {"performance": [("a JPEG", b"\xff\xd8\xff\xe0")]}}, "not a PNG"),
    ({"figures": {"performance": [("cut", PNG_SIGNATURE + b"\x00\x00\x00\rIHDR")]}},
     "truncated PNG"),
])
def test_invalid_inputs_are_refused(inputs, change, message):
    with pytest.raises(ValueError, match=message):
        render_report(replace(inputs, **change))


# ----------------------------------------------------------------------------- writing


def test_write_report_is_atomic(tmp_path):
    directory = tmp_path / "reports" / "nested"
    path = write_report("<p>first</p>", directory, "run-1")
    assert path == directory / "run-1.html"
    assert path.read_text(encoding="utf-8") == "<p>first</p>"
    path = write_report("<p>é second</p>", directory, "run-1.html")
    assert path.read_text(encoding="utf-8") == "<p>é second</p>"
    assert sorted(p.name for p in directory.iterdir()) == ["run-1.html"]  # no temp left


def test_write_report_failure_keeps_the_previous_report(tmp_path, monkeypatch):
    path = write_report("old", tmp_path, "run")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report("new", tmp_path, "run")
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.html"]


@pytest.mark.parametrize("name", ["", "../escape", "sub/run", "."])
def test_write_report_refuses_paths_as_names(tmp_path, name):
    with pytest.raises(ValueError, match="bare file name"):
        write_report("x", tmp_path, name)


# ----------------------------------------------------------------------------- Chromium


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium binary (chromium, chromium-browser or google-chrome) on PATH; "
                "install Debian's `chromium` package (.ci/run does) to check the report "
                "renders")


class _BodyAttributes(HTMLParser):
    def __init__(self):
        super().__init__()
        self.body: dict[str, str | None] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "body" and self.body is None:
            self.body = dict(attrs)


def _render_in_chromium(html: str, directory: Path) -> dict[str, str | None]:
    """Open the written report in headless Chromium; the <body> attributes after load."""
    path = write_report(html, directory, "report")
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={directory / 'chromium-profile'}",
               "--virtual-time-budget=5000", "--dump-dom", path.as_uri()]
    env = {**os.environ, "HOME": str(directory)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    parser = _BodyAttributes()
    parser.feed(done.stdout)
    assert parser.body is not None, (
        f"Chromium dumped no <body> (exit {done.returncode}); stderr:\n{done.stderr[-3000:]}")
    assert "data-images-total" in parser.body, (
        f"the inline image check did not run; stderr:\n{done.stderr[-3000:]}")
    return parser.body


def test_every_figure_loads_in_headless_chromium(inputs, tmp_path):
    body = _render_in_chromium(render_report(inputs), tmp_path)
    n = _n_figures(inputs)
    assert n == 4
    assert body["data-images-total"] == str(n)
    assert body["data-images-loaded"] == str(n), f"broken: {body['data-images-broken']}"
    assert body["data-images-broken"] == ""


def test_headless_chromium_check_catches_a_broken_figure(inputs, pngs, tmp_path):
    # Signature and IEND chunk pass render_report's checks; the chunks between are garbage.
    corrupt = PNG_SIGNATURE + b"this is no PNG chunk stream" * 4 + PNG_END
    figures = {**inputs.figures,
               "explanations": [*inputs.figures["explanations"], ("corrupt", corrupt)]}
    broken = replace(inputs, figures=figures)
    body = _render_in_chromium(render_report(broken), tmp_path)
    n = _n_figures(broken)
    assert body["data-images-total"] == str(n)
    assert body["data-images-loaded"] == str(n - 1)
    assert body["data-images-broken"] == f"figure-{n}"
