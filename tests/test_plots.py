"""Paper style, atomic figure files and plot helpers (rvsp_jax.present.plots)."""

import matplotlib as mpl
import matplotlib.image as mpimg
import numpy as np
import pytest

from rvsp_jax.present import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # PNG specification (RFC 2083), section 3.1


def test_paper_style_applies_and_restores_rc():
    before = mpl.rcParams["axes.spines.top"], mpl.rcParams["font.size"]
    with plots.paper_style():
        assert mpl.rcParams["axes.spines.top"] is False and mpl.rcParams["axes.spines.right"] is False
        assert mpl.rcParams["font.size"] == 8
        assert mpl.rcParams["savefig.dpi"] == 300
        fig, ax = plots.subplots()
        assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
        (line,) = ax.plot([0, 1], [0, 1])
        assert line.get_color() == plots.PALETTE[0]
    assert (mpl.rcParams["axes.spines.top"], mpl.rcParams["font.size"]) == before


def test_subplots_sizes():
    fig, axes = plots.subplots(2, 3, width="double")
    assert axes.shape == (2, 3)
    np.testing.assert_allclose(fig.get_size_inches(), [7.0, 0.75 * 7.0 / 3 * 2])
    fig, _ = plots.subplots(width=2.0, height=1.0)
    np.testing.assert_allclose(fig.get_size_inches(), [2.0, 1.0])


def test_save_figure_writes_valid_png_and_pdf_atomically(tmp_path):
    with plots.paper_style():
        fig, ax = plots.subplots(width=2.0, height=1.5)
        ax.plot(np.arange(10), np.arange(10) ** 2, label="x^2")
        ax.legend()
        out = tmp_path / "new" / "figs"
        paths = plots.save_figure(fig, out, "square")
    assert paths == [out / "square.png", out / "square.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(PNG_SIGNATURE)
    image = mpimg.imread(paths[0])
    assert image.shape == (450, 600, 4)  # 1.5 x 2.0 inches at 300 dpi, RGBA
    assert image[..., :3].min() < 0.5  # something was drawn
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert sorted(p.name for p in out.iterdir()) == ["square.pdf", "square.png"]  # no temp files
    assert not fig.axes  # closed/cleared


def test_save_figure_replaces_and_cleans_up_on_failure(tmp_path):
    fig, ax = plots.subplots()
    ax.plot([0, 1])
    plots.save_figure(fig, tmp_path, "a")
    old = (tmp_path / "a.png").read_bytes()

    fig, ax = plots.subplots()

    def failing_savefig(fh, **kwargs):  # e.g. disk full half-way through the PNG
        fh.write(b"partial")
        raise OSError("disk full")

    fig.savefig = failing_savefig
    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(fig, tmp_path, "a")
    assert (tmp_path / "a.png").read_bytes() == old  # previous figure intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.png"]
    with pytest.raises(ValueError, match="bare file stem"):
        plots.save_figure(plots.subplots()[0], tmp_path, "sub/dir")


def test_save_figure_closes_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    num = fig.number
    plots.save_figure(fig, tmp_path, "pyplot_made")
    assert not plt.fignum_exists(num)


def test_plot_band_and_members():
    fig, ax = plots.subplots()
    t = np.arange(50)
    x = np.random.default_rng(0).normal(size=(8, 50)).cumsum(axis=1)
    line, band = plots.plot_band(ax, t, x.mean(0), x.min(0), x.max(0), label="mean")
    assert len(ax.lines) == 1 and len(ax.collections) == 1
    assert mpl.colors.same_color(band.get_facecolor()[0][:3], line.get_color())
    lines = plots.plot_members(ax, t, x[:5], label="members")
    assert len(ax.lines) == 6 and len(lines) == 5
    assert lines[0].get_label() == "members"
    assert all(ln.get_label().startswith("_") for ln in lines[1:])  # one legend entry only
    np.testing.assert_array_equal(lines[3].get_ydata(), x[3])


def test_loglog_with_reference_has_requested_slope():
    fig, ax = plots.subplots()
    x = np.logspace(-2, 0, 30)
    y = 3.0 * x**-1.0
    y[0] = 0.0  # non-positive points are dropped, not plotted on the log axis
    data, ref = plots.loglog_with_reference(ax, x, y, slope=-2.0)
    assert len(ax.lines) == 2 and ax.get_xscale() == ax.get_yscale() == "log"
    assert len(data.get_xdata()) == 29
    rx, ry = ref.get_xdata(), ref.get_ydata()
    np.testing.assert_allclose(np.diff(np.log(ry)) / np.diff(np.log(rx)), -2.0)
    assert ref.get_label() == "slope -2"
    with pytest.raises(ValueError, match="positive"):
        plots.loglog_with_reference(ax, [1.0], [-1.0], 1.0)


def test_plot_psd_bands():
    fig, ax = plots.subplots()
    freqs = np.linspace(0, 0.5, 33)
    psd = np.random.default_rng(0).exponential(size=(20, 33))
    psd[3] = np.nan  # an excluded member
    med, band, theory = plots.plot_psd_bands(ax, freqs, psd, theory=np.ones(33))
    assert len(ax.lines) == 2 and len(ax.collections) == 1
    assert len(med.get_xdata()) == 32  # f = 0 dropped for the log axis
    np.testing.assert_allclose(med.get_ydata(), np.nanmedian(psd[:, 1:], axis=0))
    assert theory.get_linestyle() == "--"
    fig, ax = plots.subplots()
    assert plots.plot_psd_bands(ax, freqs, psd)[2] is None and len(ax.lines) == 1
    with pytest.raises(ValueError, match="match freqs"):
        plots.plot_psd_bands(ax, freqs[:5], psd)


def test_hist_compare_shares_bins():
    fig, ax = plots.subplots()
    rng = np.random.default_rng(0)
    pa, pb = plots.hist_compare(ax, rng.normal(size=500), rng.normal(2, 1, size=300), labels=("a", "b"), bins=20)
    assert len(ax.patches) == 2
    xa, xb = pa[0].get_xy()[:, 0], pb[0].get_xy()[:, 0]
    assert xa.min() == xb.min() and xa.max() == xb.max()
    assert [h.get_label() for h in ax.get_legend_handles_labels()[0]] == ["a", "b"]


def test_tables():
    rows, cols = ["w1", "b1"], ["ADF", "KPSS"]
    cells = [["stationary", "stationary"], ["unit root", "trend|level"]]
    fig, ax = plots.subplots()
    table = plots.verdict_table(ax, rows, cols, cells, colors={"unit root": "#F0E442"})
    assert not ax.axison
    assert table[2, 0].get_text().get_text() == "unit root"  # row 0 is the header
    assert mpl.colors.same_color(table[2, 0].get_facecolor(), "#F0E442")
    md = plots.markdown_table(rows, cols, cells, corner="param")
    assert md.splitlines() == [
        "| param | ADF | KPSS |",
        "|---|---|---|",
        "| w1 | stationary | stationary |",
        "| b1 | unit root | trend\\|level |",
    ]
    with pytest.raises(ValueError, match="2 rows x 2 columns"):
        plots.markdown_table(rows, cols, cells[:1])
