//! The PNG plot: CPU per (packet × reader) against readers, one line per server and transport.
//!
//! plotters draws text with ab_glyph from a TrueType file found at run time (DejaVu or Liberation on
//! Debian, else any `.ttf` under /usr/share/fonts). Without one the plot is drawn without text, and
//! the legend lives in the JSON and Markdown.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name.
    pub name: String,
    /// Its colour.
    pub color: RGBColor,
    /// (readers, µs per packet-reader), by readers.
    pub points: Vec<(f64, f64)>,
}

/// The palette, with names for the legend in text form.
pub const PALETTE: [(RGBColor, &str); 6] = [
    (RGBColor(90, 90, 90), "dark grey"),
    (RGBColor(31, 119, 180), "blue"),
    (RGBColor(190, 190, 190), "light grey"),
    (RGBColor(214, 39, 40), "red"),
    (RGBColor(44, 160, 44), "green"),
    (RGBColor(255, 127, 14), "orange"),
];

/// Registers a font once; whether text can be drawn.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let preferred = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        ];
        let found = preferred
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| find_ttf(Path::new("/usr/share/fonts"), 4));
        let Some(path) = found else {
            return false;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return false;
        };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

fn find_ttf(dir: &Path, depth: u32) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut dirs = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            dirs.push(p);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            return Some(p);
        }
    }
    if depth == 0 {
        return None;
    }
    dirs.sort();
    dirs.iter().find_map(|d| find_ttf(d, depth - 1))
}

/// Draws `series` to `path`; returns whether text was drawn.
pub fn draw(path: &Path, title: &str, series: &[Series]) -> Result<bool, String> {
    let text = font_ready();
    draw_with(path, title, series, text).map(|()| text)
}

fn draw_with(path: &Path, title: &str, series: &[Series], text: bool) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let points = series.iter().flat_map(|s| s.points.iter());
    let xmax = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let ymax = points.map(|p| p.1).filter(|y| y.is_finite()).fold(0.1, f64::max);
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(24);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(48)
            .y_label_area_size(72);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax * 1.15)
        .map_err(|x| e(&x))?;
    {
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc("readers")
                .y_desc("CPU µs per (packet × reader)")
                .axis_desc_style(("sans-serif", 16))
                .label_style(("sans-serif", 14))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.2}"));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|x| e(&x))?;
    }
    for s in series {
        let color = s.color;
        let line = chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(3)))
            .map_err(|x| e(&x))?;
        if text {
            line.label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        }
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 5, color.filled())))
            .map_err(|x| e(&x))?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Vec<Series> {
        vec![
            Series {
                name: "limit udp".into(),
                color: PALETTE[0].0,
                points: vec![(100.0, 1.4), (1000.0, 1.5)],
            },
            Series {
                name: "shardcast udp".into(),
                color: PALETTE[1].0,
                points: vec![(100.0, 1.6), (1000.0, 1.55)],
            },
        ]
    }

    #[test]
    fn draws_with_and_without_text() {
        let dir = std::env::temp_dir().join(format!("shardcast-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bare = dir.join("bare.png");
        draw_with(&bare, "t", &series(), false).unwrap();
        assert!(std::fs::metadata(&bare).unwrap().len() > 1000);
        let full = dir.join("full.png");
        draw(&full, "cost", &series()).unwrap();
        assert!(std::fs::metadata(&full).unwrap().len() > 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
