//! Minimal SVG line and scatter plots for reports (no dependencies, deterministic output).

use std::fmt::Write;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A solid polyline.
    Line,
    /// A dashed polyline (predictions).
    Dashed,
    /// Dots (simulations, measurements).
    Points,
}

/// One named series of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points in data coordinates.
    pub points: Vec<(f64, f64)>,
    /// Drawing style.
    pub style: Style,
    /// Colour index; series that belong together (a prediction and its simulation) share one.
    pub color: Option<usize>,
}

impl Series {
    /// A series from points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, style: Style) -> Self {
        Self {
            name: name.into(),
            points,
            style,
            color: None,
        }
    }

    /// Draws this series in colour `k` of the palette.
    pub fn color(mut self, k: usize) -> Self {
        self.color = Some(k);
        self
    }
}

/// A plot with axes, a title, optional log-x and reference lines.
#[derive(Clone, Debug, Default)]
pub struct Plot {
    /// Title above the plot.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// The series.
    pub series: Vec<Series>,
    /// Plot x on a log10 scale.
    pub log_x: bool,
    /// Horizontal reference lines (y, label).
    pub h_lines: Vec<(f64, String)>,
    /// Vertical reference lines (x, label).
    pub v_lines: Vec<(f64, String)>,
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const W: f64 = 700.0;
const H: f64 = 400.0;
const L: f64 = 70.0;
const R: f64 = 230.0;
const T: f64 = 40.0;
const B: f64 = 50.0;

impl Plot {
    /// A plot with a title and axis labels.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Default::default()
        }
    }

    /// Adds a series.
    pub fn with(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }

    /// Renders the plot as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let tx = |x: f64| if self.log_x { x.log10() } else { x };
        let pts = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| tx(*x).is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            let x = tx(x);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        for (y, _) in &self.h_lines {
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 < 1e-12 {
            y1 = y0 + 1.0;
        }
        let pad = 0.05 * (y1 - y0);
        let (y0, y1) = (y0 - pad, y1 + pad);
        let px = |x: f64| L + (tx(x) - x0) / (x1 - x0) * (W - L - R);
        let py = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = write!(
            s,
            r#"<text x="{}" y="22" font-size="14" font-weight="bold">{}</text>"#,
            L,
            esc(&self.title)
        );
        // Axes and ticks.
        let _ = write!(
            s,
            r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
            W - L - R,
            H - T - B
        );
        for i in 0..=5 {
            let fx = x0 + (x1 - x0) * i as f64 / 5.0;
            let xv = if self.log_x { 10f64.powf(fx) } else { fx };
            let sx = px(xv);
            let _ = write!(
                s,
                r##"<line x1="{sx:.1}" y1="{}" x2="{sx:.1}" y2="{}" stroke="#444"/>"##,
                H - B,
                H - B + 4.0
            );
            let _ = write!(
                s,
                r#"<text x="{sx:.1}" y="{}" text-anchor="middle">{}</text>"#,
                H - B + 18.0,
                tick(xv, self.log_x)
            );
            let yv = y0 + (y1 - y0) * i as f64 / 5.0;
            let sy = py(yv);
            let _ = write!(
                s,
                r##"<line x1="{}" y1="{sy:.1}" x2="{L}" y2="{sy:.1}" stroke="#444"/>"##,
                L - 4.0
            );
            let _ = write!(
                s,
                r##"<line x1="{L}" y1="{sy:.1}" x2="{}" y2="{sy:.1}" stroke="#eee"/>"##,
                W - R
            );
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                L - 6.0,
                sy + 4.0,
                tick(yv, false)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (L + W - R) / 2.0,
            H - 12.0,
            esc(&self.x_label)
        );
        let _ = write!(
            s,
            r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
            (T + H - B) / 2.0,
            (T + H - B) / 2.0,
            esc(&self.y_label)
        );
        for (y, label) in &self.h_lines {
            let sy = py(*y);
            let _ = write!(
                s,
                r##"<line x1="{L}" y1="{sy:.1}" x2="{}" y2="{sy:.1}" stroke="#999" stroke-dasharray="2,3"/>"##,
                W - R
            );
            let _ = write!(
                s,
                r##"<text x="{}" y="{:.1}" fill="#666">{}</text>"##,
                W - R - 4.0 - 6.0 * label.len() as f64,
                sy - 3.0,
                esc(label)
            );
        }
        for (x, label) in &self.v_lines {
            let sx = px(*x);
            let _ = write!(
                s,
                r##"<line x1="{sx:.1}" y1="{T}" x2="{sx:.1}" y2="{}" stroke="#999" stroke-dasharray="2,3"/>"##,
                H - B
            );
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{}" fill="#666">{}</text>"##,
                sx + 3.0,
                T + 12.0,
                esc(label)
            );
        }
        for (i, ser) in self.series.iter().enumerate() {
            let color = PALETTE[ser.color.unwrap_or(i) % PALETTE.len()];
            let visible: Vec<(f64, f64)> = ser
                .points
                .iter()
                .copied()
                .filter(|(x, y)| tx(*x).is_finite() && y.is_finite())
                .collect();
            match ser.style {
                Style::Points => {
                    for (x, y) in &visible {
                        let _ = write!(
                            s,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}" fill-opacity="0.7"/>"#,
                            px(*x),
                            py(*y)
                        );
                    }
                }
                Style::Line | Style::Dashed => {
                    let path: Vec<String> = visible
                        .iter()
                        .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                        .collect();
                    let dash = if ser.style == Style::Dashed {
                        r#" stroke-dasharray="6,4""#
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8"{dash}/>"#,
                        path.join(" ")
                    );
                }
            }
            let ly = T + 14.0 + 18.0 * i as f64;
            let lx = W - R + 12.0;
            match ser.style {
                Style::Points => {
                    let _ = write!(
                        s,
                        r#"<circle cx="{}" cy="{}" r="3" fill="{color}"/>"#,
                        lx + 10.0,
                        ly - 4.0
                    );
                }
                _ => {
                    let dash = if ser.style == Style::Dashed {
                        r#" stroke-dasharray="6,4""#
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2"{dash}/>"#,
                        ly - 4.0,
                        lx + 20.0,
                        ly - 4.0
                    );
                }
            }
            let _ = write!(
                s,
                r#"<text x="{}" y="{ly}">{}</text>"#,
                lx + 26.0,
                esc(&ser.name)
            );
        }
        s.push_str("</svg>");
        s
    }
}

fn tick(v: f64, log: bool) -> String {
    if log {
        format!("1e{:.0}", v.log10())
    } else if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.01) {
        format!("{v:.1e}")
    } else {
        format!("{v:.2}")
    }
}

/// Escapes text for XML/HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_series_and_escapes() {
        let p = Plot::new("a < b", "x", "y")
            .with(Series::new(
                "pred",
                vec![(0.0, 0.0), (1.0, 1.0)],
                Style::Dashed,
            ))
            .with(Series::new(
                "sim",
                vec![(0.5, 0.4), (f64::NAN, 1.0)],
                Style::Points,
            ));
        let svg = p.to_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a &lt; b"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(
            svg.matches("<circle").count(),
            2,
            "one point plus the legend; NaN dropped"
        );
    }
}
