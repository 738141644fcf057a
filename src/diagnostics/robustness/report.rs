//! The robustness report: the per-head table (terminal rows and CSV) and the three-panel figure
//! (PNG / SVG) of a [`RobustnessReport`].

use super::{Figures, RobustnessReport};
use crate::common::error::{Error, Result};

/// The per-head table as CSV: one row per head, then `combined` (the columns of a head's own
/// output; the `*_without` columns and `contribution` are the combined output's with that head
/// gated off), then the epsilon curves in long form (each head's own, `combined`, and
/// `without_<h>`: the combined output with head h gated off).
pub fn robustness_csv(r: &RobustnessReport) -> String {
    let mut s = String::from(
        "head,sigma_max,converged,iterations,last_rel_change,mean_random,ratio,sigma_without,contribution,mean_random_without,ratio_without\n",
    );
    let row = |name: String, f: &Figures, without: Option<(&Figures, f64)>| {
        let rest = without.map_or(",,,".to_string(), |(w, c)| {
            format!(
                "{:.6e},{c:.6e},{:.6e},{:.4}",
                w.top.sigma, w.mean_random, w.ratio
            )
        });
        format!(
            "{name},{:.6e},{},{},{:.3e},{:.6e},{:.4},{rest}\n",
            f.top.sigma,
            f.top.converged,
            f.top.iterations,
            f.top.last_rel_change,
            f.mean_random,
            f.ratio
        )
    };
    for (h, f) in r.heads.iter().enumerate() {
        s += &row(h.to_string(), f, Some((&r.without[h], r.contribution(h))));
    }
    s += &row("combined".to_string(), &r.combined, None);
    s += "\nhead,epsilon,amplification,amplification_over_sigma,relative_output_change\n";
    let curve = |name: String, f: &Figures| -> String {
        f.epsilon_curve
            .iter()
            .map(|p| {
                format!(
                    "{name},{},{:.6e},{:.4},{:.6e}\n",
                    p.epsilon,
                    p.amplification,
                    p.amplification / f.top.sigma,
                    p.relative_change
                )
            })
            .collect()
    };
    for (h, f) in r.heads.iter().enumerate() {
        s += &curve(h.to_string(), f);
    }
    s += &curve("combined".to_string(), &r.combined);
    for (h, f) in r.without.iter().enumerate() {
        s += &curve(format!("without_{h}"), f);
    }
    s
}

/// `gain / sigma` at the largest epsilon, as the table shows it.
fn last_eps(f: &Figures) -> String {
    f.epsilon_curve.last().map_or(String::new(), |p| {
        format!("{:.3} at eps {}", p.amplification / f.top.sigma, p.epsilon)
    })
}

/// Rows of the terminal table: head, sigma (or "not converged: last"), mean random, ratio,
/// amplification at the largest epsilon over sigma, contribution, and the combined output's
/// sigma and non-linear gain with the head gated off.
pub fn robustness_rows(r: &RobustnessReport) -> Vec<[String; 7]> {
    let sigma = |f: &Figures| {
        if f.top.converged {
            format!("{:.4}", f.top.sigma)
        } else {
            format!(
                "not converged in {}: last {:.4} (change {:.1e})",
                f.top.iterations, f.top.sigma, f.top.last_rel_change
            )
        }
    };
    let mut rows: Vec<[String; 7]> = r
        .heads
        .iter()
        .enumerate()
        .map(|(h, f)| {
            let w = &r.without[h];
            [
                h.to_string(),
                sigma(f),
                format!("{:.4}", f.mean_random),
                format!("{:.2}", f.ratio),
                last_eps(f),
                format!("{:+.4}", r.contribution(h)),
                format!("{}, {}", sigma(w), last_eps(w)),
            ]
        })
        .collect();
    let c = &r.combined;
    rows.push([
        "all (combined)".to_string(),
        sigma(c),
        format!("{:.4}", c.mean_random),
        format!("{:.2}", c.ratio),
        last_eps(c),
        String::new(),
        String::new(),
    ]);
    rows
}

/// Headers of [`robustness_rows`].
pub const ROBUSTNESS_HEADERS: [&str; 7] = [
    "head",
    "sigma_max (worst-case gain)",
    "mean random gain",
    "ratio",
    "non-linear gain / sigma",
    "contribution to layer sigma",
    "layer with it gated off: sigma, non-linear gain / sigma",
];

/// Pixel size of the robustness figure (three panels).
const PLOT_SIZE: (u32, u32) = (1800, 540);

/// Bars of the worst-case and mean random gain per head (left), each head's epsilon curve
/// (middle) and the combined output's, whole and with each head gated off (right).
struct RobustnessPlot<'a>(&'a RobustnessReport);

/// One curve of an epsilon panel: legend label, figures, colour, line width.
type Curve<'a> = (String, &'a Figures, plotters::style::RGBAColor, u32);

/// An epsilon panel: `gain(eps) / sigma` of each curve against eps (log scale).
fn draw_curves<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    eps: &[f64],
    curves: &[Curve],
) -> crate::diagnostics::plots::DrawResult<DB> {
    use crate::diagnostics::plots::FAMILY;
    use plotters::prelude::*;
    let (lo, hi) = eps
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &e| (a.min(e), b.max(e)));
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo * 0.5, lo * 2.0)
    };
    let points = |f: &Figures| -> Vec<(f64, f64)> {
        f.epsilon_curve
            .iter()
            .map(|p| (p.epsilon, p.amplification / f.top.sigma))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let y_hi = curves
        .iter()
        .flat_map(|c| points(c.1))
        .fold(1.0f64, |m, (_, y)| m.max(y))
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 19))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("epsilon (perturbation / input norm)")
        .y_desc("gain(eps) / sigma_max")
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 15))
        .draw()?;
    for (label, f, color, width) in curves {
        let (color, width) = (*color, *width);
        let pts = points(f);
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 18, y)], color.stroke_width(width))
            });
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    if curves.len() <= 17 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, 12))
            .draw()?;
    }
    Ok(())
}

impl crate::diagnostics::plots::Figure for RobustnessPlot<'_> {
    fn size(&self) -> (u32, u32) {
        PLOT_SIZE
    }
    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> crate::diagnostics::plots::DrawResult<DB> {
        use crate::diagnostics::plots::FAMILY;
        use plotters::prelude::*;
        let r = self.0;
        root.fill(&WHITE)?;
        let (left, rest) = root.split_horizontally(PLOT_SIZE.0 * 2 / 5);
        let (middle, right) = rest.split_horizontally(PLOT_SIZE.0 * 3 / 10);
        let n = r.heads.len();
        let top = r
            .heads
            .iter()
            .map(|f| f.top.sigma)
            .filter(|s| s.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let mut bars = ChartBuilder::on(&left)
            .caption(
                format!("Jacobian gain per head (w.r.t. {})", r.settings.wrt.label()),
                (FAMILY, 19),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..top)?;
        bars.configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(32))
            .x_label_formatter(&|v| format!("{}", v.round() as i64))
            .x_desc("head")
            .y_desc("|J v| / |v|")
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        let worst = RGBColor(178, 24, 43);
        let random = RGBColor(150, 150, 150);
        bars.draw_series(r.heads.iter().enumerate().map(|(h, f)| {
            let x = h as f64;
            Rectangle::new([(x - 0.38, 0.0), (x, f.top.sigma.max(0.0))], worst.filled())
        }))?
        .label("worst direction: top singular value")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], worst.filled()));
        bars.draw_series(r.heads.iter().enumerate().map(|(h, f)| {
            let x = h as f64;
            Rectangle::new(
                [(x, 0.0), (x + 0.38, f.mean_random.max(0.0))],
                random.filled(),
            )
        }))?
        .label("random directions: mean gain")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], random.filled()));
        bars.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()?;

        let eps = &r.settings.epsilons;
        let own: Vec<Curve> = r
            .heads
            .iter()
            .enumerate()
            .map(|(h, f)| (format!("head {h}"), f, Palette99::pick(h).to_rgba(), 2))
            .collect();
        draw_curves(&middle, "Non-linear gain / linear prediction", eps, &own)?;
        let mut layer: Vec<Curve> =
            vec![("all heads".to_string(), &r.combined, BLACK.to_rgba(), 4)];
        layer.extend(
            r.without
                .iter()
                .enumerate()
                .map(|(h, f)| (format!("head {h} off"), f, Palette99::pick(h).to_rgba(), 1)),
        );
        draw_curves(&right, "Combined output, each head gated off", eps, &layer)?;
        Ok(())
    }
}

/// Writes `<dir>/robustness.csv` and the figure `<dir>/robustness.{png,svg}` (the font must be
/// loaded: [`crate::diagnostics::plots::load_font`]); returns the paths.
pub fn write_robustness(
    dir: &std::path::Path,
    r: &RobustnessReport,
) -> Result<Vec<std::path::PathBuf>> {
    let csv = dir.join("robustness.csv");
    std::fs::write(&csv, robustness_csv(r)).map_err(|source| Error::Io {
        path: csv.clone(),
        source,
    })?;
    let [png, svg] =
        crate::diagnostics::plots::write_figure(&dir.join("robustness"), &RobustnessPlot(r))?;
    Ok(vec![csv, png, svg])
}
