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
    label_every: usize,
    /// Column labels run downwards unless they all fit across their cell.
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

impl Heatmap<'_> {
    fn layout(&self) -> HeatmapLayout {
        let (nr, nc) = (self.row_labels.len().max(1), self.col_labels.len().max(1));
        let cell = (640 / nr.max(nc) as u32).clamp(1, 56);
        let (label_font, label_every) = if cell >= 14 {
            (13, 1)
        } else if cell >= 9 {
            (cell - 1, 1)
        } else {
            (9, 10_usize.div_ceil(cell as usize))
        };
        let shown = |labels: &'_ [String]| -> u32 {
            max_text_width(
                labels.iter().step_by(label_every).map(String::as_str),
                label_font,
            )
        };
        let title_h = 12
            + TITLE_FONT
            + 6
            + if self.note.is_some() {
                NOTE_FONT + 6
            } else {
                0
            }
            + 8;
        let left = 12 + DESC_FONT + 10 + shown(self.row_labels) + 8;
        let grid_w = cell * nc as u32;
        let grid_h = cell * nr as u32;
        let bar_h = grid_h.max(160);
        let rotate_cols = shown(self.col_labels) + 4 > cell * label_every as u32;
        let col_band = if rotate_cols {
            shown(self.col_labels)
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
            label_every,
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
        let inset = if cell > 1 { 1 } else { 0 };
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

        let row_style = font(l.label_font).pos(Pos::new(HPos::Right, VPos::Center));
        for (r, label) in self.row_labels.iter().enumerate().step_by(l.label_every) {
            root.draw_text(label, &row_style, (x0 - 6, y0 + r as i32 * cell + cell / 2))?;
        }
        let col_style = if l.rotate_cols {
            font(l.label_font)
                .transform(FontTransform::Rotate90)
                .pos(Pos::new(HPos::Left, VPos::Center))
        } else {
            font(l.label_font).pos(Pos::new(HPos::Center, VPos::Top))
        };
        let labels_top = y0 + l.grid_h as i32 + 6;
        for (c, label) in self.col_labels.iter().enumerate().step_by(l.label_every) {
            root.draw_text(
                label,
                &col_style,
                (x0 + c as i32 * cell + cell / 2, labels_top),
            )?;
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

pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A horizontal reference line (a threshold, a null baseline), dashed and named in the legend.
pub(crate) struct Reference {
    pub y: f64,
    pub label: String,
}

/// Lines with markers, one per series, with the legend in its own column on the right.
pub(crate) struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    pub x: XScale,
    pub y_range: (f64, f64),
    pub references: Vec<Reference>,
}

const CHART_W: u32 = 760;
const CHART_H: u32 = 460;

impl LineChart {
    fn legend_width(&self) -> u32 {
        let names = self
            .series
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.references.iter().map(|r| r.label.as_str()));
        max_text_width(names, 13) + 56
    }

    fn map_x(&self, x: f64) -> f64 {
        match self.x {
            XScale::Linear { .. } | XScale::Categories(_) => x,
            XScale::Log1pSteps { .. } => (1.0 + x.max(0.0)).log10(),
        }
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
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&self.title, font(TITLE_FONT))
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(64)
            .build_cartesian_2d(x_lo..x_hi, self.y_range.0..self.y_range.1)?;
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
            .y_label_formatter(&|v: &f64| format!("{v:.1}"))
            .x_label_formatter(&lin_fmt);
        if ticks.is_some() {
            mesh.x_labels(0);
        }
        mesh.draw()?;
        if let Some(ticks) = &ticks {
            let style = font(TICK_FONT).pos(Pos::new(HPos::Center, VPos::Top));
            for (x, label) in ticks {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(*x, self.y_range.0), (*x, self.y_range.1)],
                    RGBColor(0xdd, 0xdd, 0xdd),
                )))?;
                let (px, py) = chart.backend_coord(&(*x, self.y_range.0));
                plot_area.draw(&PathElement::new(vec![(px, py), (px, py + 5)], BLACK))?;
                plot_area.draw_text(label, &style, (px, py + 8))?;
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
            let color = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (self.map_x(x), y)).collect();
            chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
            // Markers show where the data are; on dense curves they would only blur the line.
            if pts.len() <= 40 {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
        }

        // Legend column.
        let entry = font(13).pos(Pos::new(HPos::Left, VPos::Center));
        let mut y = 60;
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            legend_area.draw(&PathElement::new(
                vec![(6, y), (34, y)],
                color.stroke_width(2),
            ))?;
            legend_area.draw(&Circle::new((20, y), 3, color.filled()))?;
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
    fn font_measures_text() {
        ensure_font().unwrap();
        let (w_short, _) = text_size("h1", 13);
        let (w_long, h) = text_size("mlp/seed0/step2250/h1", 13);
        assert!(w_long > 5 * w_short, "{w_short} {w_long}");
        assert!(h > 5 && h < 30);
    }
}
