//! The PNG plot: latency (p50, p99) and throughput (calls/s by calls in flight) as grouped bars,
//! stubnet beside the floor and RPyC. Drawn with plotters' bitmap backend; text uses a font
//! embedded from a crate, so nothing is needed from the system.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::Results;

const STUBNET: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const FLOOR: RGBColor = RGBColor(0x8c, 0x8c, 0x8c);
const RPYC: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const RPYC_WRITTEN: RGBColor = RGBColor(0xff, 0xbb, 0x78);
const FONT: &str = "sans-serif";

/// One bar chart: a bar per series in each category.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    categories: Vec<String>,
    series: Vec<(&'static str, RGBColor, Vec<Option<f64>>)>,
    /// How a value is written above its bar.
    format: fn(f64) -> String,
}

pub fn draw(path: &Path, r: &Results) -> Result<(), String> {
    for style in [FontStyle::Normal, FontStyle::Bold] {
        register_font(FONT, style, epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|_| "the embedded font cannot be read".to_owned())?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("cannot draw {}: {e}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let title = format!(
        "stubnet vs the loopback floor vs RPyC ({} cores, {})",
        r.machine.cores, r.machine.date
    );
    let root = root.titled(&title, (FONT, 26)).map_err(e)?;
    let (left, right) = root.split_horizontally(560);
    bars(&left, &latency(r)).map_err(e)?;
    bars(&right, &throughput(r)).map_err(e)?;
    root.present().map_err(e)
}

fn latency(r: &Results) -> Panel {
    let rp = r.rpyc.as_ref().ok();
    Panel {
        title: "Latency, sequential calls (lower is better)",
        y_desc: "µs",
        categories: vec!["p50".into(), "p99".into()],
        series: vec![
            (
                "stubnet",
                STUBNET,
                vec![Some(r.stubnet.p50_us), Some(r.stubnet.p99_us)],
            ),
            (
                "floor",
                FLOOR,
                vec![Some(r.floor.p50_us), Some(r.floor.p99_us)],
            ),
            (
                "RPyC, cached method",
                RPYC,
                vec![rp.map(|p| p.cached.p50_us), rp.map(|p| p.cached.p99_us)],
            ),
            (
                "RPyC, as written",
                RPYC_WRITTEN,
                vec![
                    rp.map(|p| p.as_written.p50_us),
                    rp.map(|p| p.as_written.p99_us),
                ],
            ),
        ],
        format: |v| format!("{v:.0}"),
    }
}

fn throughput(r: &Results) -> Panel {
    let rp = r.rpyc.as_ref().ok();
    let keys: Vec<usize> = r.stubnet.one_app.keys().copied().collect();
    let top = keys.last().copied().unwrap_or(64);
    let mut categories: Vec<String> = keys.iter().map(|n| format!("{n} in flight")).collect();
    categories.push(format!("{} apps × {top}", r.settings.apps));
    let side = |f: &crate::results::Figures| -> Vec<Option<f64>> {
        let mut v: Vec<Option<f64>> = keys.iter().map(|n| f.one_app.get(n).copied()).collect();
        v.push(f.many_apps.get(&top).copied());
        v
    };
    let mut rpyc: Vec<Option<f64>> = keys
        .iter()
        .map(|n| {
            rp.and_then(|p| {
                if *n == 1 {
                    Some(p.cached.per_sec)
                } else {
                    p.async_.get(n).copied()
                }
            })
        })
        .collect();
    rpyc.push(None);
    Panel {
        title: "Throughput, one app unless said (higher is better)",
        y_desc: "calls/s",
        categories,
        series: vec![
            ("stubnet", STUBNET, side(&r.stubnet)),
            ("floor", FLOOR, side(&r.floor)),
            ("RPyC (cached; async_ in flight)", RPYC, rpyc),
        ],
        format: |v| match v {
            v if v >= 10_000.0 => format!("{:.0}k", v / 1000.0),
            v => format!("{:.1}k", v / 1000.0),
        },
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawError<'a> = DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;
type Chart<'c, 'a> =
    ChartContext<'c, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn bars<'a>(area: &Area<'a>, panel: &Panel) -> Result<(), DrawError<'a>> {
    let top = panel
        .series
        .iter()
        .flat_map(|s| s.2.iter().flatten())
        .fold(1.0f64, |m, v| m.max(*v));
    let n = panel.categories.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FONT, 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n, 0f64..top * 1.25)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(panel.y_desc)
        .y_label_formatter(&|v| (panel.format)(*v))
        .label_style((FONT, 15))
        .draw()?;
    series(&mut chart, panel)?;
    let category_style = TextStyle::from((FONT, 16)).pos(Pos::new(HPos::Center, VPos::Top));
    for (c, name) in panel.categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(c as f64 + 0.5, 0.0));
        let (ox, oy) = area.get_base_pixel();
        let at = (x - ox, y - oy + 8);
        area.draw(&Text::new(name.clone(), at, category_style.clone()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
}

/// One bar per series in each category, its value written above it.
fn series<'a>(chart: &mut Chart<'_, 'a>, panel: &Panel) -> Result<(), DrawError<'a>> {
    let width = 0.8 / panel.series.len() as f64;
    let value_style = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, (name, color, values)) in panel.series.iter().enumerate() {
        let color = *color;
        let bar = |c: usize| 0.1 + c as f64 + j as f64 * width;
        let present = || {
            values
                .iter()
                .enumerate()
                .filter_map(|(c, v)| v.map(|v| (c, v)))
        };
        chart
            .draw_series(present().map(|(c, v)| {
                Rectangle::new([(bar(c), 0.0), (bar(c) + width * 0.9, v)], color.filled())
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        let labels = present().map(|(c, v)| {
            let at = (bar(c) + width * 0.45, v);
            Text::new((panel.format)(v), at, value_style.clone())
        });
        chart.draw_series(labels)?;
    }
    Ok(())
}
