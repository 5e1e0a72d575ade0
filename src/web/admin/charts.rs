//! Server-rendered SVG charts: revenue per day (bars) and plays by hour of the week (a
//! heat map). No JavaScript; each chart carries a text summary for screen readers.

use std::fmt::Write;

/// Escapes text for SVG/HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Vertical bars, one per `(label, value)`; `fmt` writes a value for people. Labels under
/// the first, last and every `label_every`-th bar.
pub fn bars(
    title: &str,
    points: &[(String, i64)],
    fmt: impl Fn(i64) -> String,
    label_every: usize,
) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 8.0;
    const TOP: f64 = 22.0;
    const BOTTOM: f64 = 28.0;
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let total: i64 = points.iter().map(|p| p.1).sum();
    let n = points.len().max(1) as f64;
    let slot = (W - 2.0 * LEFT) / n;
    let bar = (slot * 0.7).max(1.0);
    let plot_h = H - TOP - BOTTOM;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}: total {}, highest {}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(title),
        esc(&fmt(total)),
        esc(&fmt(max))
    );
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" y1="{y}" x2="{x2}" y2="{y}"/><text class="max" x="{LEFT}" y="14">max {}</text>"#,
        esc(&fmt(max)),
        y = H - BOTTOM,
        x2 = W - LEFT
    );
    for (i, (label, value)) in points.iter().enumerate() {
        let h = (*value as f64 / max as f64) * plot_h;
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let y = H - BOTTOM - h;
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}"><title>{}: {}</title></rect>"#,
            esc(label),
            esc(&fmt(*value))
        );
        if i == 0 || i + 1 == points.len() || (label_every > 0 && i % label_every == 0) {
            let _ = write!(
                s,
                r#"<text class="label" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + bar / 2.0,
                H - 8.0,
                esc(label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

pub const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A 7 × 24 grid, Monday first; darker is busier.
pub fn week_heatmap(title: &str, counts: &[[i64; 24]; 7]) -> String {
    const CELL: f64 = 26.0;
    const LEFT: f64 = 40.0;
    const TOP: f64 = 20.0;
    let w = LEFT + 24.0 * CELL + 4.0;
    let h = TOP + 7.0 * CELL + 4.0;
    let max = counts.iter().flatten().copied().max().unwrap_or(0).max(1);
    let total: i64 = counts.iter().flatten().sum();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart heat" viewBox="0 0 {w} {h}" role="img" aria-label="{}: {total} plays" xmlns="http://www.w3.org/2000/svg">"#,
        esc(title)
    );
    for hour in (0..24).step_by(3) {
        let _ = write!(
            s,
            r#"<text class="label" x="{:.1}" y="14" text-anchor="middle">{hour:02}</text>"#,
            LEFT + hour as f64 * CELL + CELL / 2.0
        );
    }
    for (d, row) in counts.iter().enumerate() {
        let y = TOP + d as f64 * CELL;
        let _ = write!(
            s,
            r#"<text class="label" x="4" y="{:.1}">{}</text>"#,
            y + CELL * 0.65,
            DAYS[d]
        );
        for (hour, &n) in row.iter().enumerate() {
            // Five shades; an hour with no plays is the lightest.
            let level = if n == 0 { 0 } else { 1 + (n * 4 / max).min(3) };
            let _ = write!(
                s,
                r#"<rect class="h{level}" x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" rx="3"><title>{} {hour:02}:00 — {n} play{}</title></rect>"#,
                LEFT + hour as f64 * CELL,
                CELL - 3.0,
                CELL - 3.0,
                DAYS[d],
                if n == 1 { "" } else { "s" }
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_highest_and_escape_labels() {
        let pts = vec![("a<b".to_owned(), 50), ("2026-12-02".to_owned(), 100)];
        let svg = bars("Revenue", &pts, |v| format!("${v}"), 7);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a&lt;b"));
        assert!(!svg.contains("a<b"));
        assert!(svg.contains("total $150"));
        // The highest bar fills the plot (220 - 22 - 28 = 170).
        assert!(svg.contains(r#"height="170.0""#), "{svg}");
        assert!(svg.contains(r#"height="85.0""#));
        assert_eq!(svg.matches("<rect").count(), 2);
    }

    #[test]
    fn heatmap_has_a_cell_per_hour_and_shades_by_count() {
        let mut counts = [[0i64; 24]; 7];
        counts[4][20] = 8;
        counts[0][9] = 1;
        let svg = week_heatmap("Plays", &counts);
        assert_eq!(svg.matches("<rect").count(), 7 * 24);
        assert!(svg.contains("Fri 20:00 — 8 plays"));
        assert!(svg.contains(r#"class="h4""#));
        assert!(svg.contains("Mon 09:00 — 1 play<"));
        assert!(svg.contains("9 plays"));
    }
}
