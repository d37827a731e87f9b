//! SVG plots of a run: latency over time and the latency CDF (plotters).

use std::path::Path;

use plotters::prelude::*;

use crate::metrics::TimelinePoint;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {detail}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub detail: String,
}

fn err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |detail| PlotError {
        path: path.display().to_string(),
        detail,
    }
}

/// Per-second p50, p99 and max send-to-receipt latency.
pub fn latency_over_time(
    path: &Path,
    title: &str,
    timeline: &[TimelinePoint],
) -> Result<(), PlotError> {
    let e = err(path);
    let series = |f: fn(&TimelinePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter_map(|p| f(p).map(|v| (p.second as f64 + 0.5, v)))
            .collect()
    };
    let p50 = series(|p| p.e2e_p50_ms);
    let p99 = series(|p| p.e2e_p99_ms);
    let max = series(|p| p.e2e_max_ms);
    let x_max = timeline.len().max(1) as f64;
    let y_max = max
        .iter()
        .chain(&p99)
        .map(|(_, v)| *v)
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start of run")
        .y_desc("send to receipt (ms)")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (data, color, name) in [
        (max, RGBColor(200, 200, 200), "max"),
        (p99, RED, "p99"),
        (p50, BLUE, "p50"),
    ] {
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Cumulative distribution of latency: (ms, fraction) points, log x axis.
pub fn cdf(path: &Path, title: &str, curves: &[(&str, Vec<(f64, f64)>)]) -> Result<(), PlotError> {
    let e = err(path);
    let mut xs = curves
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|(x, _)| *x))
        .filter(|x| x.is_finite());
    // Without a sample the log axis has no range (and plotters would loop
    // forever looking for its ticks): say so instead of drawing.
    let Some(first) = xs.next() else {
        return Err(e("no samples to plot".into()));
    };
    let (lo, hi) = xs.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let x_min = lo.max(0.01);
    let x_max = hi.max(x_min * 10.0);
    let x_min = x_min * 0.9;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min..x_max * 1.1).log_scale(), 0f64..1.0)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of samples at or below")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN];
    for (i, (name, pts)) in curves.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, y)| (x.max(x_min), y)),
                color.stroke_width(2),
            ))
            .map_err(|x| e(x.to_string()))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_plots() {
        let dir = std::env::temp_dir().join(format!("parley-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let timeline: Vec<TimelinePoint> = (0..5)
            .map(|s| TimelinePoint {
                second: s,
                deliveries: 10,
                sends: 1,
                acks: 1,
                e2e_p50_ms: Some(1.0 + s as f64),
                e2e_p99_ms: Some(3.0 + s as f64),
                e2e_max_ms: Some(5.0 + s as f64),
            })
            .collect();
        let a = dir.join("t.svg");
        latency_over_time(&a, "test", &timeline).unwrap();
        let b = dir.join("c.svg");
        cdf(
            &b,
            "test",
            &[("e2e", vec![(0.5, 0.1), (1.0, 0.5), (9.0, 1.0)])],
        )
        .unwrap();
        // No samples (a run whose every send was refused): an error, at once.
        let none = cdf(&b, "test", &[("e2e", Vec::new()), ("ack", Vec::new())]);
        assert!(none.is_err_and(|x| x.to_string().contains("no samples")));
        assert!(std::fs::read_to_string(&a).unwrap().contains("<svg"));
        assert!(std::fs::read_to_string(&b).unwrap().contains("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
