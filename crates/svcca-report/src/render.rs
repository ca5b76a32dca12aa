//! Drawing figures with plotters into a PNG and an SVG of the same layout.
//!
//! Text uses DejaVu Sans, embedded in the binary (`assets/DejaVuSans.ttf`, its licence beside it)
//! and registered with plotters' ab_glyph support as `sans-serif`, so a report renders the same on
//! a machine without fonts (containers). Layouts are computed in pixels from measured text, so
//! labels are never clipped whatever their length.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ReportError;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the embedded font once per process.
pub(crate) fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok()
            && plotters::style::register_font(FAMILY, FontStyle::Bold, FONT).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

fn font(size: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size as f64).into_font()).color(&BLACK)
}

/// Width and height in pixels of `text` at `size`.
fn text_size(text: &str, size: u32) -> (u32, u32) {
    (FAMILY, size as f64)
        .into_font()
        .box_size(text)
        .unwrap_or((text.chars().count() as u32 * size * 6 / 10, size))
}

fn max_text_width<'a>(texts: impl IntoIterator<Item = &'a str>, size: u32) -> u32 {
    texts
        .into_iter()
        .map(|t| text_size(t, size).0)
        .max()
        .unwrap_or(0)
}

/// The plot files written for one figure, named relative to the report folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlotFiles {
    pub png: String,
    pub svg: String,
    pub width: u32,
    pub height: u32,
}

pub(crate) type DrawResult<DB> =
    Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A figure that knows its size and can draw itself on any backend.
pub(crate) trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Writes `<stem>.png` and `<stem>.svg` under `dir`.
pub(crate) fn render<F: Figure>(
    figure: &F,
    dir: &Path,
    stem: &str,
) -> Result<PlotFiles, ReportError> {
    ensure_font()?;
    let size = figure.size();
    let png = format!("{stem}.png");
    let svg = format!("{stem}.svg");
    let plot_err = |file: &str, e: String| ReportError::Plot {
        file: dir.join(file),
        message: e,
    };
    {
        let path = dir.join(&png);
        let root = BitMapBackend::new(&path, size).into_drawing_area();
        figure
            .draw(&root)
            .map_err(|e| plot_err(&png, e.to_string()))?;
        root.present().map_err(|e| plot_err(&png, e.to_string()))?;
    }
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        figure
            .draw(&root)
            .map_err(|e| plot_err(&svg, e.to_string()))?;
        root.present().map_err(|e| plot_err(&svg, e.to_string()))?;
    }
    let path = dir.join(&svg);
    std::fs::write(&path, text).map_err(|source| ReportError::Write { path, source })?;
    Ok(PlotFiles {
        png,
        svg,
        width: size.0,
        height: size.1,
    })
}

/// matplotlib's viridis at nine evenly spaced points; perceptually uniform and readable in grey.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2d, 0x7b),
    (0x3b, 0x52, 0x8b),
    (0x2c, 0x72, 0x8e),
    (0x21, 0x91, 0x8c),
    (0x28, 0xae, 0x80),
    (0x5e, 0xc9, 0x62),
    (0xad, 0xdc, 0x30),
    (0xfd, 0xe7, 0x25),
];

pub(crate) fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Categorical colours (matplotlib's tab10).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

const MISSING: RGBColor = RGBColor(0xd9, 0xd9, 0xd9);
const OUTLINE: RGBColor = RGBColor(0xe4, 0x1a, 0x1c);

/// A matrix drawn as coloured cells, with labelled rows and columns and a colour bar.
pub(crate) struct Heatmap<'a> {
    pub title: String,
    pub note: Option<String>,
    pub row_labels: &'a [String],
    pub col_labels: &'a [String],
    /// Row-major; `None` is drawn grey.
    pub values: &'a [Option<f64>],
    pub x_desc: String,
    pub y_desc: String,
    pub colorbar_label: String,
    pub range: (f64, f64),
    /// Cells outlined in red (best matches).
    pub outlined: Vec<(usize, usize)>,
}

struct HeatmapLayout {
    cell: u32,
    label_font: u32,
    rows: AxisLabels,
    cols: AxisLabels,
    /// Column labels run downwards unless they all fit across their band.
    rotate_cols: bool,
    left: u32,
    top: u32,
    grid_w: u32,
    grid_h: u32,
    bar_h: u32,
    width: u32,
    height: u32,
    annotate: bool,
}

const TITLE_FONT: u32 = 18;
const DESC_FONT: u32 = 14;
const NOTE_FONT: u32 = 12;
const TICK_FONT: u32 = 12;

/// Up to this many rows (or columns) every one is labelled: at the smallest cell (10 px, 9 px
/// text) a 100-row grid is 1000 px, still readable when the SVG is zoomed. Beyond it rows are
/// labelled by group.
pub(crate) const LABEL_EVERY_ROW_MAX: usize = 100;
/// The smallest cell of a heatmap whose rows are all labelled.
const LABELLED_CELL: u32 = 10;
/// Grouped labels are drawn one size smaller than a cell would allow, never below this.
const MIN_LABEL_FONT: u32 = 9;

/// Which labels an axis of a heatmap shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AxisLabels {
    /// Each shown label and the rows (or columns) `start .. start + len` it names.
    pub marks: Vec<AxisMark>,
    /// Marks name groups of rows, drawn as bands with separators between them.
    pub grouped: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AxisMark {
    pub start: usize,
    pub len: usize,
    pub text: String,
}

impl AxisLabels {
    /// Every label shown up to [`LABEL_EVERY_ROW_MAX`]; beyond it, when the labels are canonical
    /// keys (`run=mlp,seed=0,step=100,layer=h1`), consecutive rows sharing the leading parts
    /// (run, then seed, then step) are one band with one label: the finest such grouping whose
    /// every band is tall enough (`cell` px per row) for a line of `font` px text. Labels that
    /// do not split that way keep every n-th label.
    pub(crate) fn of(labels: &[String], cell: u32, font: u32) -> Self {
        let n = labels.len();
        if n <= LABEL_EVERY_ROW_MAX {
            return Self::every(labels, 1);
        }
        let parts: Vec<Vec<&str>> = labels.iter().map(|l| l.split(',').collect()).collect();
        let depth = parts.iter().map(Vec::len).min().unwrap_or(0);
        let fits = |marks: &[AxisMark]| marks.iter().all(|m| m.len as u32 * cell > font);
        let mut coarsest = None;
        // Deepest first, short of the whole label (that would be one band per row).
        for d in (1..depth).rev() {
            let marks = Self::group_marks(&parts, d);
            if marks.len() < 2 && d > 1 {
                continue;
            }
            if fits(&marks) {
                return Self {
                    marks,
                    grouped: true,
                };
            }
            coarsest = Some(marks);
        }
        match coarsest {
            // Even the coarsest bands are too thin for some labels: keep the bands, label those
            // that fit.
            Some(mut marks) if marks.len() > 1 => {
                for m in &mut marks {
                    if m.len as u32 * cell <= font {
                        m.text.clear();
                    }
                }
                Self {
                    marks,
                    grouped: true,
                }
            }
            _ => Self::every(labels, ((font + 1) as usize).div_ceil(cell.max(1) as usize)),
        }
    }

    fn every(labels: &[String], step: usize) -> Self {
        Self {
            marks: labels
                .iter()
                .enumerate()
                .step_by(step.max(1))
                .map(|(i, t)| AxisMark {
                    start: i,
                    len: 1,
                    text: t.clone(),
                })
                .collect(),
            grouped: false,
        }
    }

    /// Runs of consecutive labels sharing their first `depth` parts.
    fn group_marks(parts: &[Vec<&str>], depth: usize) -> Vec<AxisMark> {
        let mut marks: Vec<AxisMark> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let text = p[..depth].join(",");
            match marks.last_mut() {
                Some(m) if m.text == text => m.len += 1,
                _ => marks.push(AxisMark {
                    start: i,
                    len: 1,
                    text,
                }),
            }
        }
        marks
    }

    fn widest(&self, font: u32) -> u32 {
        max_text_width(self.marks.iter().map(|m| m.text.as_str()), font)
    }
}

impl Heatmap<'_> {
    fn layout(&self) -> HeatmapLayout {
        let (nr, nc) = (self.row_labels.len().max(1), self.col_labels.len().max(1));
        let n = nr.max(nc);
        let cell = if n <= LABEL_EVERY_ROW_MAX {
            (640 / n as u32).clamp(LABELLED_CELL, 56)
        } else {
            (900 / n as u32).max(1)
        };
        let label_font = if cell >= 14 {
            13
        } else {
            (cell.saturating_sub(1)).max(MIN_LABEL_FONT)
        };
        let rows = AxisLabels::of(self.row_labels, cell, label_font);
        let cols = AxisLabels::of(self.col_labels, cell, label_font);
        let title_h = 12
            + TITLE_FONT
            + 6
            + if self.note.is_some() {
                NOTE_FONT + 6
            } else {
                0
            }
            + 8;
        // Grouped labels stand beside a bracket that spans their band.
        let bracket = |a: &AxisLabels| if a.grouped { 6 } else { 0 };
        let left = 12 + DESC_FONT + 10 + rows.widest(label_font) + bracket(&rows) + 8;
        let grid_w = cell * nc as u32;
        let grid_h = cell * nr as u32;
        let bar_h = grid_h.max(160);
        let rotate_cols = cols
            .marks
            .iter()
            .any(|m| text_size(&m.text, label_font).0 + 4 > cell * m.len as u32);
        let col_band = bracket(&cols)
            + if rotate_cols {
                cols.widest(label_font)
            } else {
                label_font + 4
            };
        let bottom = 8 + col_band + 10 + DESC_FONT + 14;
        let tick_w = max_text_width(["0.00", "1.00"], TICK_FONT);
        let right = 24 + 18 + 6 + tick_w + 10 + DESC_FONT + 14;
        let width = (left + grid_w + right)
            .max(text_size(&self.title, TITLE_FONT).0 + 24)
            .max(
                self.note
                    .as_deref()
                    .map_or(0, |n| text_size(n, NOTE_FONT).0 + 24),
            );
        let height = title_h + bar_h.max(grid_h) + bottom;
        let annotate = cell >= 40 && nr * nc <= 400;
        HeatmapLayout {
            cell,
            label_font,
            rows,
            cols,
            rotate_cols,
            left,
            top: title_h,
            grid_w,
            grid_h,
            bar_h,
            width,
            height,
            annotate,
        }
    }

    fn norm(&self, v: f64) -> f64 {
        let (lo, hi) = self.range;
        if hi > lo { (v - lo) / (hi - lo) } else { 0.5 }
    }
}

impl Figure for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let l = self.layout();
        (l.width, l.height)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let l = self.layout();
        root.fill(&WHITE)?;
        let center_x = (l.width / 2) as i32;
        root.draw_text(
            &self.title,
            &font(TITLE_FONT).pos(Pos::new(HPos::Center, VPos::Top)),
            (center_x, 12),
        )?;
        if let Some(note) = &self.note {
            let style = font(NOTE_FONT)
                .color(&RGBColor(0x44, 0x44, 0x44))
                .pos(Pos::new(HPos::Center, VPos::Top));
            root.draw_text(note, &style, (center_x, (12 + TITLE_FONT + 6) as i32))?;
        }
        let nc = self.col_labels.len();
        let (x0, y0, cell) = (l.left as i32, l.top as i32, l.cell as i32);
        // Cells overlap their right/bottom neighbour by nothing: plotters fills inclusive corners.
        // Below 6 px a one-pixel gap per cell would read as a white mesh over the colours, so
        // small cells touch (groups keep their separators).
        let inset = if cell >= 6 { 1 } else { 0 };
        for (idx, v) in self.values.iter().enumerate() {
            let (r, c) = ((idx / nc.max(1)) as i32, (idx % nc.max(1)) as i32);
            let color = v.map_or(MISSING, |v| viridis(self.norm(v)));
            let (cx, cy) = (x0 + c * cell, y0 + r * cell);
            root.draw(&Rectangle::new(
                [(cx, cy), (cx + cell - inset, cy + cell - inset)],
                color.filled(),
            ))?;
            if let (true, Some(v)) = (l.annotate, v) {
                let ink = if self.norm(*v) < 0.6 { WHITE } else { BLACK };
                let style = font(12)
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                root.draw_text(&format!("{v:.2}"), &style, (cx + cell / 2, cy + cell / 2))?;
            }
        }
        for &(r, c) in &self.outlined {
            let (cx, cy) = (x0 + c as i32 * cell, y0 + r as i32 * cell);
            root.draw(&Rectangle::new(
                [(cx, cy), (cx + cell - 1, cy + cell - 1)],
                OUTLINE.stroke_width(2),
            ))?;
            root.draw(&Rectangle::new(
                [(cx + 1, cy + 1), (cx + cell - 2, cy + cell - 2)],
                OUTLINE.stroke_width(1),
            ))?;
        }
        root.draw(&Rectangle::new(
            [
                (x0 - 1, y0 - 1),
                (x0 + l.grid_w as i32, y0 + l.grid_h as i32),
            ],
            BLACK.stroke_width(1),
        ))?;

        let ink = RGBColor(0x33, 0x33, 0x33);
        let row_gap = if l.rows.grouped { 6 + 6 } else { 6 };
        let row_style = font(l.label_font).pos(Pos::new(HPos::Right, VPos::Center));
        for m in &l.rows.marks {
            let (a, b) = (
                y0 + m.start as i32 * cell,
                y0 + (m.start + m.len) as i32 * cell,
            );
            if l.rows.grouped {
                // A bracket spanning the band, and a white line across the grid between bands.
                root.draw(&PathElement::new(
                    vec![
                        (x0 - 4, a + 1),
                        (x0 - 8, a + 1),
                        (x0 - 8, b - 1),
                        (x0 - 4, b - 1),
                    ],
                    ink.stroke_width(1),
                ))?;
                if m.start > 0 {
                    root.draw(&PathElement::new(
                        vec![(x0, a), (x0 + l.grid_w as i32 - 1, a)],
                        WHITE.stroke_width(1),
                    ))?;
                }
            }
            if !m.text.is_empty() {
                root.draw_text(&m.text, &row_style, (x0 - row_gap, (a + b) / 2))?;
            }
        }
        let col_style = if l.rotate_cols {
            font(l.label_font)
                .transform(FontTransform::Rotate90)
                .pos(Pos::new(HPos::Left, VPos::Center))
        } else {
            font(l.label_font).pos(Pos::new(HPos::Center, VPos::Top))
        };
        let grid_bottom = y0 + l.grid_h as i32;
        let labels_top = grid_bottom + if l.cols.grouped { 6 + 6 } else { 6 };
        for m in &l.cols.marks {
            let (a, b) = (
                x0 + m.start as i32 * cell,
                x0 + (m.start + m.len) as i32 * cell,
            );
            if l.cols.grouped {
                root.draw(&PathElement::new(
                    vec![
                        (a + 1, grid_bottom + 4),
                        (a + 1, grid_bottom + 8),
                        (b - 1, grid_bottom + 8),
                        (b - 1, grid_bottom + 4),
                    ],
                    ink.stroke_width(1),
                ))?;
                if m.start > 0 {
                    root.draw(&PathElement::new(
                        vec![(a, y0), (a, grid_bottom - 1)],
                        WHITE.stroke_width(1),
                    ))?;
                }
            }
            if !m.text.is_empty() {
                root.draw_text(&m.text, &col_style, ((a + b) / 2, labels_top))?;
            }
        }
        let desc = font(DESC_FONT);
        root.draw_text(
            &self.x_desc,
            &desc.pos(Pos::new(HPos::Center, VPos::Bottom)),
            (x0 + l.grid_w as i32 / 2, l.height as i32 - 10),
        )?;
        root.draw_text(
            &self.y_desc,
            &desc
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (12, y0 + l.grid_h as i32 / 2),
        )?;

        // Colour bar: top is the range's maximum.
        let bx = x0 + l.grid_w as i32 + 24;
        let bh = l.bar_h as i32;
        for py in 0..bh {
            let t = 1.0 - py as f64 / (bh - 1).max(1) as f64;
            // One-pixel rows: plotters draws nothing for a zero-height filled rectangle.
            root.draw(&Rectangle::new(
                [(bx, y0 + py), (bx + 18, y0 + py + 1)],
                viridis(t).filled(),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(bx, y0), (bx + 18, y0 + bh - 1)],
            BLACK.stroke_width(1),
        ))?;
        let (lo, hi) = self.range;
        let tick_style = font(TICK_FONT).pos(Pos::new(HPos::Left, VPos::Center));
        for k in 0..=4 {
            let t = k as f64 / 4.0;
            let y = y0 + ((1.0 - t) * (bh - 1) as f64).round() as i32;
            root.draw(&PathElement::new(vec![(bx + 18, y), (bx + 22, y)], BLACK))?;
            root.draw_text(
                &format!("{:.2}", lo + t * (hi - lo)),
                &tick_style,
                (bx + 24, y),
            )?;
        }
        let tick_w = max_text_width(["0.00", "1.00"], TICK_FONT) as i32;
        root.draw_text(
            &self.colorbar_label,
            &desc
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (bx + 24 + tick_w + 10, y0 + bh / 2),
        )?;
        Ok(())
    }
}

/// How the x axis maps data.
pub(crate) enum XScale {
    Linear {
        min: f64,
        max: f64,
    },
    /// Training steps on `log10(1 + step)`, ticks at the given steps.
    Log1pSteps {
        ticks: Vec<i64>,
    },
    /// Named positions `0, 1, …` (layers from input to output).
    Categories(Vec<String>),
}

#[derive(Default)]
pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: SeriesStyle,
}

/// How a series is drawn. By default each series takes the next palette colour and a solid line;
/// series that belong together (two measures of one pair) share a colour and differ by dash.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SeriesStyle {
    /// Palette index; `None`: the series' own position.
    pub colour: Option<usize>,
    pub dash: Dash,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) enum Dash {
    #[default]
    Solid,
    /// Long dashes, hollow markers.
    Dashed,
}

/// A horizontal reference line (a threshold, a null baseline), dashed and named in the legend.
pub(crate) struct Reference {
    pub y: f64,
    pub label: String,
}

/// A shaded horizontal band (a null baseline's spread), named in the legend.
pub(crate) struct Band {
    pub lo: f64,
    pub hi: f64,
    pub label: String,
}

/// Lines with markers, one per series, with the legend in its own column on the right.
pub(crate) struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    pub x: XScale,
    /// The span of the y ticks; the plot leaves a small margin beyond it so that markers on the
    /// extremes are not cut. [`fit_y_range`] fits it to the data.
    pub y_range: (f64, f64),
    pub references: Vec<Reference>,
    pub bands: Vec<Band>,
}

const CHART_W: u32 = 760;
const CHART_H: u32 = 460;
const BAND_FILL: RGBColor = RGBColor(0xbb, 0xbb, 0xbb);

/// A tick step of 1, 2, 2.5 or 5 × 10^k close to `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Ticks at multiples of a nice step within `lo ..= hi` (about five of them), and the decimals
/// their labels need.
pub(crate) fn nice_ticks(lo: f64, hi: f64) -> (Vec<f64>, usize) {
    let step = nice_step((hi - lo) / 5.0);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let ticks = (first..=last).map(|i| i as f64 * step).collect();
    // 0.25 → 2 decimals, 0.025 → 3, 5 → 0.
    let mut decimals = 0;
    while decimals < 8
        && ((step * 10f64.powi(decimals as i32)).round() - step * 10f64.powi(decimals as i32)).abs()
            > 1e-6
    {
        decimals += 1;
    }
    (ticks, decimals)
}

/// A y range fitted to `values`: their span padded by a tenth on each side (at least `min_span`
/// wide, so that flat lines do not fill the chart with noise), widened to nice ticks and kept
/// within `bounds` (a similarity's 0..1). Bands are included when doing so leaves the data at
/// least a third of the height; a band far from the data is named in the legend instead.
pub(crate) fn fit_y_range(
    values: impl IntoIterator<Item = f64>,
    bands: &[Band],
    bounds: (f64, f64),
    min_span: f64,
) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return bounds;
    }
    let data_span = (hi - lo).max(min_span);
    for b in bands {
        let (blo, bhi) = (lo.min(b.lo), hi.max(b.hi));
        if data_span >= (bhi - blo) / 3.0 {
            (lo, hi) = (blo, bhi);
        }
    }
    if hi - lo < min_span {
        let mid = (lo + hi) / 2.0;
        (lo, hi) = (mid - min_span / 2.0, mid + min_span / 2.0);
    }
    let pad = 0.1 * (hi - lo);
    let step = nice_step((hi - lo + 2.0 * pad) / 5.0);
    let lo = ((lo - pad) / step).floor() * step;
    let hi = ((hi + pad) / step).ceil() * step;
    (lo.max(bounds.0), hi.min(bounds.1))
}

impl LineChart {
    fn legend_width(&self) -> u32 {
        let names = self
            .series
            .iter()
            .map(|s| s.name.clone())
            .chain(self.references.iter().map(|r| r.label.clone()))
            .chain(self.bands.iter().map(|b| self.band_label(b)));
        names.map(|n| text_size(&n, 13).0).max().unwrap_or(0) + 56
    }

    fn map_x(&self, x: f64) -> f64 {
        match self.x {
            XScale::Linear { .. } | XScale::Categories(_) => x,
            XScale::Log1pSteps { .. } => (1.0 + x.max(0.0)).log10(),
        }
    }

    /// A band's legend entry, saying so when it lies off the axis.
    fn band_label(&self, b: &Band) -> String {
        if b.hi < self.y_range.0 {
            format!("{} (below the axis)", b.label)
        } else if b.lo > self.y_range.1 {
            format!("{} (above the axis)", b.label)
        } else {
            b.label.clone()
        }
    }

    fn colour(i: usize, s: &Series) -> RGBColor {
        PALETTE[s.style.colour.unwrap_or(i) % PALETTE.len()]
    }
}

/// A legend's sample of a line: one stroke when solid, three dashes when dashed.
fn legend_line(dash: Dash, y: i32) -> Vec<Vec<(i32, i32)>> {
    match dash {
        Dash::Solid => vec![vec![(6, y), (34, y)]],
        Dash::Dashed => vec![
            vec![(6, y), (12, y)],
            vec![(17, y), (23, y)],
            vec![(28, y), (34, y)],
        ],
    }
}

impl Figure for LineChart {
    fn size(&self) -> (u32, u32) {
        (CHART_W + self.legend_width(), CHART_H)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (plot_area, legend_area) = root.split_horizontally(CHART_W);
        // Custom ticks (training steps on a log axis, layer names) are drawn by hand: plotters'
        // key-point ranges cannot take a label formatter.
        let (x_lo, x_hi, ticks): (f64, f64, Option<Vec<(f64, String)>>) = match &self.x {
            XScale::Linear { min, max } => (*min, if max > min { *max } else { min + 1.0 }, None),
            XScale::Log1pSteps { ticks } => {
                let hi = ticks.iter().copied().max().unwrap_or(1).max(1);
                let mut shown: Vec<i64> = ticks.clone();
                shown.sort_unstable();
                shown.dedup();
                // Thin crowded ticks, keeping the last: at least ~6% of the axis apart.
                let span = (1.0 + hi as f64).log10();
                let mut kept: Vec<(f64, String)> = Vec::new();
                for s in shown.iter().rev() {
                    let x = (1.0 + *s as f64).log10();
                    if kept.last().is_none_or(|k| k.0 - x >= 0.06 * span) {
                        kept.push((x, s.to_string()));
                    }
                }
                kept.reverse();
                let pad = span * 0.03;
                (-pad, span + pad, Some(kept))
            }
            XScale::Categories(names) => {
                let every = names.len().div_ceil(16).max(1);
                let kept = names
                    .iter()
                    .enumerate()
                    .step_by(every)
                    .map(|(i, n)| (i as f64, n.clone()))
                    .collect();
                (-0.3, names.len().max(1) as f64 - 0.7, Some(kept))
            }
        };
        // The y ticks span `y_range`; a small margin beyond keeps markers on the extremes whole.
        let (y_lo, y_hi) = if self.y_range.1 > self.y_range.0 {
            self.y_range
        } else {
            (self.y_range.0 - 0.5, self.y_range.0 + 0.5)
        };
        let margin = 0.02 * (y_hi - y_lo);
        let (plot_lo, plot_hi) = (y_lo - margin, y_hi + margin);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&self.title, font(TITLE_FONT))
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(64)
            .build_cartesian_2d(x_lo..x_hi, plot_lo..plot_hi)?;
        let lin_fmt = |v: &f64| {
            if (v - v.round()).abs() < 1e-9 {
                format!("{}", v.round() as i64)
            } else {
                format!("{v:.2}")
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .label_style(font(TICK_FONT))
            .axis_desc_style(font(DESC_FONT))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
            .x_label_formatter(&lin_fmt)
            // Nice y ticks are drawn by hand below, with as many decimals as their step needs.
            .y_labels(0);
        if ticks.is_some() {
            mesh.x_labels(0);
        }
        mesh.draw()?;
        let grid = RGBColor(0xdd, 0xdd, 0xdd);
        let (y_ticks, decimals) = nice_ticks(y_lo, y_hi);
        let y_style = font(TICK_FONT).pos(Pos::new(HPos::Right, VPos::Center));
        for y in &y_ticks {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x_lo, *y), (x_hi, *y)],
                grid,
            )))?;
            let (px, py) = chart.backend_coord(&(x_lo, *y));
            plot_area.draw(&PathElement::new(vec![(px - 5, py), (px, py)], BLACK))?;
            plot_area.draw_text(&format!("{y:.decimals$}"), &y_style, (px - 8, py))?;
        }
        if let Some(ticks) = &ticks {
            let style = font(TICK_FONT).pos(Pos::new(HPos::Center, VPos::Top));
            for (x, label) in ticks {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(*x, plot_lo), (*x, plot_hi)],
                    grid,
                )))?;
                let (px, py) = chart.backend_coord(&(*x, plot_lo));
                plot_area.draw(&PathElement::new(vec![(px, py), (px, py + 5)], BLACK))?;
                plot_area.draw_text(label, &style, (px, py + 8))?;
            }
        }

        for b in &self.bands {
            let (lo, hi) = (b.lo.max(plot_lo), b.hi.min(plot_hi));
            if lo < hi {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x_lo, lo), (x_hi, hi)],
                    BAND_FILL.mix(0.35).filled(),
                )))?;
            }
        }
        let grey = RGBColor(0x55, 0x55, 0x55);
        for (k, r) in self.references.iter().enumerate() {
            let style = if k % 2 == 0 {
                grey.stroke_width(1)
            } else {
                RGBColor(0x99, 0x00, 0x00).stroke_width(1)
            };
            chart.draw_series(DashedLineSeries::new(
                vec![(x_lo, r.y), (x_hi, r.y)],
                8,
                5,
                style,
            ))?;
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = Self::colour(i, s);
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (self.map_x(x), y)).collect();
            match s.style.dash {
                Dash::Solid => {
                    chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
                }
                Dash::Dashed => {
                    chart.draw_series(DashedLineSeries::new(
                        pts.clone(),
                        10,
                        6,
                        color.stroke_width(2),
                    ))?;
                }
            }
            // Markers show where the data are; on dense curves they would only blur the line.
            if pts.len() <= 40 {
                let marker = match s.style.dash {
                    Dash::Solid => color.filled(),
                    Dash::Dashed => color.stroke_width(1),
                };
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, marker)))?;
            }
        }

        // Legend column.
        let entry = font(13).pos(Pos::new(HPos::Left, VPos::Center));
        let mut y = 60;
        for (i, s) in self.series.iter().enumerate() {
            let color = Self::colour(i, s);
            for segment in legend_line(s.style.dash, y) {
                legend_area.draw(&PathElement::new(segment, color.stroke_width(2)))?;
            }
            let marker = match s.style.dash {
                Dash::Solid => color.filled(),
                Dash::Dashed => color.stroke_width(1),
            };
            legend_area.draw(&Circle::new((20, y), 3, marker))?;
            legend_area.draw_text(&s.name, &entry, (42, y))?;
            y += 22;
        }
        for (k, r) in self.references.iter().enumerate() {
            let color = if k % 2 == 0 {
                grey
            } else {
                RGBColor(0x99, 0x00, 0x00)
            };
            legend_area.draw(&PathElement::new(
                vec![(6, y), (14, y)],
                color.stroke_width(1),
            ))?;
            legend_area.draw(&PathElement::new(
                vec![(20, y), (28, y)],
                color.stroke_width(1),
            ))?;
            legend_area.draw_text(&r.label, &entry, (42, y))?;
            y += 22;
        }
        for b in &self.bands {
            legend_area.draw(&Rectangle::new(
                [(6, y - 6), (34, y + 6)],
                BAND_FILL.mix(0.35).filled(),
            ))?;
            legend_area.draw_text(&self.band_label(b), &entry, (42, y))?;
            y += 22;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_clamps() {
        assert_eq!(viridis(0.0), RGBColor(0x44, 0x01, 0x54));
        assert_eq!(viridis(1.0), RGBColor(0xfd, 0xe7, 0x25));
        assert_eq!(viridis(7.0), viridis(1.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
    }

    #[test]
    fn ticks_are_nice_and_labelled_with_the_decimals_their_step_needs() {
        let (ticks, decimals) = nice_ticks(0.94, 1.0);
        assert_eq!(decimals, 2);
        let want = [0.94, 0.96, 0.98, 1.0];
        assert_eq!(ticks.len(), want.len(), "{ticks:?}");
        assert!(
            ticks.iter().zip(want).all(|(t, w)| (t - w).abs() < 1e-12),
            "{ticks:?}"
        );
        let (ticks, decimals) = nice_ticks(0.0, 1.02);
        assert_eq!((ticks.len(), decimals), (5, 2), "{ticks:?}");
        let (ticks, decimals) = nice_ticks(0.0, 40.0);
        assert_eq!((ticks, decimals), (vec![0.0, 10.0, 20.0, 30.0, 40.0], 0));
    }

    fn band(lo: f64, hi: f64) -> Band {
        Band {
            lo,
            hi,
            label: "null".into(),
        }
    }

    #[test]
    fn y_range_fits_the_data_and_includes_a_band_only_when_near() {
        let data = [0.951, 0.97, 0.985];
        let (lo, hi) = fit_y_range(data, &[], (0.0, 1.0), 0.02);
        assert!(
            (0.93..0.951).contains(&lo) && hi > 0.985 && hi <= 1.0,
            "{lo} {hi}"
        );
        // A null far below would flatten the data: it stays off the axis.
        assert_eq!(
            fit_y_range(data, &[band(0.2, 0.3)], (0.0, 1.0), 0.02),
            (lo, hi)
        );
        // A null beside the data is shown whole.
        let (lo, hi) = fit_y_range([0.4, 0.6], &[band(0.3, 0.35)], (0.0, 1.0), 0.02);
        assert!(lo <= 0.3 && (0.6..=0.7 + 1e-9).contains(&hi), "{lo} {hi}");
        // Flat data get the minimum span, not a zero-height axis.
        let (lo, hi) = fit_y_range([0.5, 0.5], &[], (0.0, 1.0), 0.02);
        assert!(hi - lo >= 0.02 && lo < 0.5 && hi > 0.5, "{lo} {hi}");
        // Bounds hold, and no data gives the bounds.
        let (lo, hi) = fit_y_range([0.0, 1.0], &[], (0.0, 1.0), 0.02);
        assert_eq!((lo, hi), (0.0, 1.0));
        assert_eq!(fit_y_range([f64::NAN], &[], (0.0, 1.0), 0.02), (0.0, 1.0));
    }

    fn keys(n_runs: usize, seeds: usize, steps: usize, layers: usize) -> Vec<String> {
        let mut out = Vec::new();
        for r in 0..n_runs {
            for s in 0..seeds {
                for t in 0..steps {
                    for l in 0..layers {
                        out.push(format!("run=r{r},seed={s},step={t},layer=h{l}"));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn axis_labels_every_row_up_to_the_cut_off_then_groups() {
        ensure_font().unwrap();
        let labels = keys(1, 4, 5, 5);
        assert_eq!(labels.len(), LABEL_EVERY_ROW_MAX);
        let every = AxisLabels::of(&labels, 10, 9);
        assert!(!every.grouped);
        assert_eq!(every.marks.len(), labels.len());

        // 2 × 3 × 10 × 5 = 300 rows of 3 px: bands of one step's 5 layers (15 px) hold a label.
        let labels = keys(2, 3, 10, 5);
        let grouped = AxisLabels::of(&labels, 3, 9);
        assert!(grouped.grouped);
        assert_eq!(grouped.marks.len(), 60);
        assert_eq!(grouped.marks[1].text, "run=r0,seed=0,step=1");
        assert!(grouped.marks.iter().all(|m| m.len == 5));
        // 1 px rows: a step's band is 5 px, too thin for 9 px text: group by seed instead.
        let coarser = AxisLabels::of(&labels, 1, 9);
        assert_eq!(coarser.marks.len(), 6);
        assert_eq!(coarser.marks[0].text, "run=r0,seed=0");

        // Labels that are not keys keep every n-th.
        let plain: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        let thinned = AxisLabels::of(&plain, 3, 9);
        assert!(!thinned.grouped);
        assert_eq!(thinned.marks.len(), 75);
    }

    #[test]
    fn font_measures_text() {
        ensure_font().unwrap();
        let (w_short, _) = text_size("h1", 13);
        let (w_long, h) = text_size("mlp/seed0/step2250/h1", 13);
        assert!(w_long > 5 * w_short, "{w_short} {w_long}");
        assert!(h > 5 && h < 30);
    }
}
