//! Pictures of a head-similarity analysis: the `H × H` similarity heatmap and the eigenvalue
//! spectrum, each drawn once by backend-generic code and written as PNG and SVG (plotters).
//!
//! Text is rasterised by plotters' pure-Rust `ab_glyph` backend from a TrueType file loaded at
//! run time ([`load_font`]), so the build needs no system font library; the file comes from
//! `--font`, `FLASHMHA_FONT`, or the usual system font folders. Writes only the files it is
//! asked to write.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::similarity::{SimilarityAnalysis, SimilarityMatrix};
use crate::common::error::{Error, Result};

/// Family name plotters knows our font by.
pub(crate) const FAMILY: &str = "sans-serif";
/// Environment variable naming a TrueType font to use instead of the system search.
pub const FONT_ENV: &str = "FLASHMHA_FONT";
/// Well-known places of a sans-serif TrueType font (Debian/Ubuntu, Arch, Fedora, macOS, Windows).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];
/// Folders scanned (recursively, sorted) for any `.ttf` when no candidate exists.
const FONT_DIRS: &[&str] = &["/usr/share/fonts", "/usr/local/share/fonts"];

/// Pixel size of the heatmap and the spectrum plot.
const HEATMAP_SIZE: (u32, u32) = (900, 780);
const SPECTRUM_SIZE: (u32, u32) = (900, 520);
/// Width of the colour-bar panel right of the heatmap.
const COLORBAR_WIDTH: u32 = 130;
/// Up to this many heads every head gets a tick label and every cell its value.
const LABEL_EVERY_HEAD_UP_TO: usize = 32;
const ANNOTATE_CELLS_UP_TO: usize = 16;
/// Characters of cluster list that fit the heatmap's footer line.
const FOOTER_CHARS: usize = 80;

/// Registers a TrueType font with plotters once per process and returns its path. Looks at
/// `explicit`, then `$FLASHMHA_FONT`, then the usual system fonts, then any `.ttf` in the usual font folders.
pub fn load_font(explicit: Option<&Path>) -> Result<PathBuf> {
    static LOADED: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = LOADED.get() {
        return Ok(p.clone());
    }
    let path = find_font(explicit).ok_or(Error::FontNotFound { env: FONT_ENV })?;
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    // plotters keeps fonts for the whole process ('static); loaded once, so leaking is bounded.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| {
        Error::BadInputFile {
            path: path.clone(),
            reason: "not a TrueType/OpenType font".into(),
        }
    })?;
    Ok(LOADED.get_or_init(|| path).clone())
}

fn find_font(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(FONT_ENV) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = FONT_CANDIDATES.iter().map(Path::new).find(|p| p.is_file()) {
        return Some(p.to_path_buf());
    }
    FONT_DIRS.iter().find_map(|d| first_ttf(Path::new(d)))
}

/// First `.ttf` under `dir` in sorted path order (deterministic).
fn first_ttf(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries.iter().find_map(|p| {
        if p.is_dir() {
            first_ttf(p)
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            Some(p.clone())
        } else {
            None
        }
    })
}

/// Diverging colour for a cosine in [-1, 1]: blue (-1) through white (0) to red (+1), so
/// "unrelated" reads as blank and sign is never confused with magnitude.
pub fn cosine_color(c: f64) -> RGBColor {
    const NEG: (f64, f64, f64) = (33.0, 102.0, 172.0);
    const POS: (f64, f64, f64) = (178.0, 24.0, 43.0);
    let t = c.clamp(-1.0, 1.0);
    let (end, w) = if t < 0.0 { (NEG, -t) } else { (POS, t) };
    let mix = |e: f64| (255.0 + (e - 255.0) * w).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

fn plot_err<E: std::error::Error + Send + Sync>(what: &Path, e: DrawingAreaErrorKind<E>) -> Error {
    Error::Plot {
        path: what.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes the heatmap of `m` as `<stem>.png` and `<stem>.svg`; returns both paths.
pub fn write_heatmap(
    stem: &Path,
    m: &SimilarityMatrix,
    analysis: &SimilarityAnalysis,
    title: &str,
) -> Result<[PathBuf; 2]> {
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, HEATMAP_SIZE).into_drawing_area();
        draw_heatmap(&root, m, analysis, title).map_err(|e| plot_err(&png, e))?;
        root.present().map_err(|e| plot_err(&png, e))?;
    }
    {
        let root = SVGBackend::new(&svg, HEATMAP_SIZE).into_drawing_area();
        draw_heatmap(&root, m, analysis, title).map_err(|e| plot_err(&svg, e))?;
        root.present().map_err(|e| plot_err(&svg, e))?;
    }
    Ok([png, svg])
}

/// Writes the spectrum plot as `<stem>.png` and `<stem>.svg`; returns both paths.
pub fn write_spectrum(
    stem: &Path,
    analysis: &SimilarityAnalysis,
    heads: usize,
) -> Result<[PathBuf; 2]> {
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, SPECTRUM_SIZE).into_drawing_area();
        draw_spectrum(&root, analysis, heads).map_err(|e| plot_err(&png, e))?;
        root.present().map_err(|e| plot_err(&png, e))?;
    }
    {
        let root = SVGBackend::new(&svg, SPECTRUM_SIZE).into_drawing_area();
        draw_spectrum(&root, analysis, heads).map_err(|e| plot_err(&svg, e))?;
        root.present().map_err(|e| plot_err(&svg, e))?;
    }
    Ok([png, svg])
}

/// What a drawing function returns on any plotters backend.
pub type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A picture drawn once by backend-generic code ([`write_picture`] writes it as PNG and SVG).
pub trait Picture {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Writes `pic` at `size` pixels as `<stem>.png` and `<stem>.svg`; returns both paths.
pub fn write_picture(stem: &Path, size: (u32, u32), pic: &impl Picture) -> Result<[PathBuf; 2]> {
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        pic.draw(&root).map_err(|e| plot_err(&png, e))?;
        root.present().map_err(|e| plot_err(&png, e))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        pic.draw(&root).map_err(|e| plot_err(&svg, e))?;
        root.present().map_err(|e| plot_err(&svg, e))?;
    }
    Ok([png, svg])
}

/// Tick step so that at most ~32 head labels fit an axis.
fn head_tick_step(h: usize) -> usize {
    if h <= LABEL_EVERY_HEAD_UP_TO {
        1
    } else {
        h.div_ceil(LABEL_EVERY_HEAD_UP_TO).next_power_of_two()
    }
}

/// Heatmap with head 0 at the top-left, a colour bar, and the clusters listed underneath.
pub fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    m: &SimilarityMatrix,
    analysis: &SimilarityAnalysis,
    title: &str,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let h = m.heads();
    let (main, footer) = root.split_vertically(HEATMAP_SIZE.1 - 60);
    let (plot, bar) = main.split_horizontally(HEATMAP_SIZE.0 - COLORBAR_WIDTH);
    let hf = h as f64;
    // Cell (i, j) is centred on x = j, y = -i (row 0 at the top), so plotters' integer key
    // points fall on cell centres, rows and columns get the same labels, and non-integer key
    // points get no label.
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..hf - 0.5, -(hf - 0.5)..0.5)?;
    let integer = |v: f64| ((v - v.round()).abs() < 1e-9).then_some(v.round());
    let col_label = |v: &f64| integer(*v).map_or(String::new(), |k| format!("{}", k as i64));
    let row_label = |v: &f64| integer(*v).map_or(String::new(), |k| format!("{}", -k as i64));
    let ticks = h.div_ceil(head_tick_step(h));
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("head j")
        .y_desc("head i")
        .x_labels(ticks)
        .y_labels(ticks)
        .x_label_formatter(&col_label)
        .y_label_formatter(&row_label)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()?;
    chart.draw_series((0..h).flat_map(|i| {
        (0..h).map(move |j| {
            let (x, y) = (j as f64, -(i as f64));
            Rectangle::new(
                [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                cosine_color(f64::from(m.get(i, j))).filled(),
            )
        })
    }))?;
    if h <= ANNOTATE_CELLS_UP_TO {
        chart.draw_series((0..h).flat_map(|i| {
            (0..h).map(move |j| {
                let c = f64::from(m.get(i, j));
                // White text on saturated cells, black elsewhere.
                let color: &'static RGBColor = if c.abs() > 0.6 { &WHITE } else { &BLACK };
                let style = TextStyle::from((FAMILY, 13).into_font())
                    .color(color)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                // Values that round to zero print as 0.00, not -0.00.
                let shown = if c.abs() < 0.005 { 0.0 } else { c };
                Text::new(format!("{shown:.2}"), (j as f64, -(i as f64)), style)
            })
        }))?;
    }
    draw_colorbar(&bar)?;
    let clusters = if analysis.clusters.is_empty() {
        format!(
            "no near-duplicate heads at similarity >= {:.2}",
            analysis.threshold
        )
    } else {
        let mut list = String::new();
        for (k, c) in analysis.clusters.iter().enumerate() {
            let hs: Vec<String> = c.heads.iter().map(usize::to_string).collect();
            let item = format!("{{{}}}  ", hs.join(", "));
            // Keep the footer on one line; the report's clusters table has them all.
            if list.len() + item.len() > FOOTER_CHARS {
                list += &format!("... (+{} more)", analysis.clusters.len() - k);
                break;
            }
            list += &item;
        }
        format!(
            "near-duplicate clusters (>= {:.2}): {}",
            analysis.threshold,
            list.trim_end()
        )
    };
    let summary = format!(
        "effective distinct heads (participation ratio): {:.2} of {h}",
        analysis.spectrum.effective_heads
    );
    footer.draw_text(&summary, &(FAMILY, 16).into_text_style(&footer), (20, 4))?;
    footer.draw_text(&clusters, &(FAMILY, 16).into_text_style(&footer), (20, 28))?;
    Ok(())
}

/// Vertical colour scale from -1 (bottom) to +1 (top) with labelled ticks.
fn draw_colorbar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
    /// Colour steps drawn; enough that neighbouring bands are indistinguishable.
    const BANDS: usize = 200;
    let mut chart = ChartBuilder::on(area)
        .margin_top(50)
        .margin_bottom(60)
        .margin_right(20)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..1.0, -1.0..1.0)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(9)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .y_desc("mean cos")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()?;
    chart.draw_series((0..BANDS).map(|k| {
        let y0 = -1.0 + 2.0 * k as f64 / BANDS as f64;
        let y1 = -1.0 + 2.0 * (k + 1) as f64 / BANDS as f64;
        Rectangle::new(
            [(0.0, y0), (1.0, y1)],
            cosine_color(0.5 * (y0 + y1)).filled(),
        )
    }))?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, -1.0), (1.0, 1.0)],
        BLACK.stroke_width(1),
    )))?;
    Ok(())
}

/// Eigenvalues (descending) as bars, with the all-distinct reference λ = 1.
pub fn draw_spectrum<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    analysis: &SimilarityAnalysis,
    heads: usize,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let eig = &analysis.spectrum.eigenvalues;
    let n = eig.len();
    let top = eig.first().copied().unwrap_or(1.0).max(1.0) * 1.12;
    let bottom = eig.last().copied().unwrap_or(0.0).min(0.0);
    let caption = format!(
        "Eigenvalues of the head-similarity matrix: effective heads {:.2} of {heads}",
        analysis.spectrum.effective_heads
    );
    // Bar k (rank k + 1) is centred on x = k + 1, so integer key points label ranks.
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FAMILY, 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..n as f64 + 0.5, bottom..top)?;
    let ticks = n.div_ceil(head_tick_step(n));
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_max_light_lines(1)
        .x_labels(ticks)
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-9 {
                format!("{}", v.round() as i64)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| format!("{v:.1}"))
        .x_desc("rank")
        .y_desc("eigenvalue λ")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()?;
    let bar = RGBColor(33, 102, 172);
    chart.draw_series(eig.iter().enumerate().map(|(k, &l)| {
        let x = k as f64 + 1.0;
        Rectangle::new([(x - 0.35, 0.0), (x + 0.35, l)], bar.filled())
    }))?;
    let reference = RGBColor(178, 24, 43);
    chart
        .draw_series(LineSeries::new(
            [(0.5, 1.0), (n as f64 + 0.5, 1.0)],
            reference.stroke_width(2),
        ))?
        .label("λ = 1 for every head when all heads are orthogonal")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], reference.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_white_at_zero_and_saturated_at_the_ends() {
        assert_eq!(cosine_color(0.0), RGBColor(255, 255, 255));
        assert_eq!(cosine_color(1.0), RGBColor(178, 24, 43));
        assert_eq!(cosine_color(-1.0), RGBColor(33, 102, 172));
        assert_eq!(cosine_color(7.0), cosine_color(1.0));
        // Monotone towards red on the positive side.
        let (a, b) = (cosine_color(0.3), cosine_color(0.6));
        assert!(b.1 < a.1 && b.2 < a.2);
    }

    #[test]
    fn tick_step_keeps_labels_readable() {
        assert_eq!(head_tick_step(1), 1);
        assert_eq!(head_tick_step(32), 1);
        assert_eq!(head_tick_step(33), 2);
        assert_eq!(head_tick_step(128), 4);
        for h in 1usize..=128 {
            assert!(h.div_ceil(head_tick_step(h)) <= LABEL_EVERY_HEAD_UP_TO);
        }
    }
}
