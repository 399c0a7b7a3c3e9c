//! Figures as SVG (no plotting dependency): the task × length accuracy heatmap known from the BABILong paper, and
//! mean accuracy against length for several models on one figure.

use super::depth::DepthTable;
use super::eval::{length_name, task_length_axes, Results};

/// Red (0 %) → yellow (50 %) → green (100 %).
pub fn colour_rgb(a: f64) -> [u8; 3] {
    let (lo, mid, hi) = ((215.0, 48.0, 39.0), (254.0, 224.0, 139.0), (26.0, 152.0, 80.0));
    let (from, to, t) = if a < 0.5 { (lo, mid, a / 0.5) } else { (mid, hi, (a - 0.5) / 0.5) };
    let mix = |x: f64, y: f64| (x + (y - x) * t.clamp(0.0, 1.0)).round() as u8;
    [mix(from.0, to.0), mix(from.1, to.1), mix(from.2, to.2)]
}

fn colour(a: f64) -> String {
    let [r, g, b] = colour_rgb(a);
    format!("rgb({r},{g},{b})")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub(crate) fn axes(r: &Results) -> (Vec<String>, Vec<usize>) {
    task_length_axes(r.cells.iter().map(|c| (c.task.as_str(), c.length)))
}

/// The heatmap of one results file.
pub fn heatmap(r: &Results, title: &str) -> String {
    let (tasks, lengths) = axes(r);
    let accuracy =
        |i: usize, l: usize| r.cells.iter().find(|c| c.task == tasks[i] && c.length == l).map(|c| c.accuracy);
    grid(&tasks, &lengths, &accuracy, title, "accuracy %, context length in GPT-2 tokens")
}

/// The heatmap of a results file split by the needle's depth: a row per task × depth band, shallow needles (early
/// in the context) on top.
pub fn depth_heatmap(t: &DepthTable, title: &str) -> String {
    let (tasks, lengths) = t.axes();
    let rows: Vec<(String, usize)> =
        tasks.iter().flat_map(|task| (0..t.bands).map(move |b| (task.clone(), b))).collect();
    let labels: Vec<String> = rows
        .iter()
        .map(|(task, b)| if tasks.len() > 1 { format!("{task} {}", t.band_name(*b)) } else { t.band_name(*b) })
        .collect();
    let accuracy = |i: usize, l: usize| {
        let (task, band) = &rows[i];
        t.cell(task, l, *band).map(|c| c.correct as f64 / c.n as f64)
    };
    let caption = "accuracy % by the depth of the answer's last fact (rows), context length in GPT-2 tokens";
    grid(&labels, &lengths, &accuracy, title, caption)
}

/// A heatmap: a row per label, a column per length, cells coloured and labelled by `accuracy(row, length)`.
fn grid(
    rows: &[String],
    lengths: &[usize],
    accuracy: &dyn Fn(usize, usize) -> Option<f64>,
    title: &str,
    caption: &str,
) -> String {
    let (cw, ch, top) = (64.0, 36.0, 60.0);
    let left = (30.0 + 8.0 * rows.iter().map(|r| r.chars().count()).max().unwrap_or(0) as f64).max(70.0);
    let (w, h) = (left + cw * lengths.len() as f64 + 20.0, top + ch * rows.len() as f64 + 50.0);
    // the caption (13 px sans-serif, about 7 px a character) sets the width of a narrow grid
    let mut svg = svg_open(w.max(left + 7.0 * caption.chars().count() as f64), h, left, title);
    for (j, l) in lengths.iter().enumerate() {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            left + cw * (j as f64 + 0.5),
            top - 8.0,
            length_name(*l)
        ));
    }
    for (i, label) in rows.iter().enumerate() {
        let y = top + ch * i as f64;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left - 8.0,
            y + ch / 2.0 + 5.0,
            escape(label)
        ));
        for (j, l) in lengths.iter().enumerate() {
            let x = left + cw * j as f64;
            match accuracy(i, *l) {
                Some(a) => svg.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{ch}\" fill=\"{}\" stroke=\"white\"/>\
                     <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.0}</text>\n",
                    colour(a),
                    x + cw / 2.0,
                    y + ch / 2.0 + 5.0,
                    100.0 * a
                )),
                None => svg.push_str(&format!(
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{ch}\" fill=\"#eee\" stroke=\"white\"/>\n"
                )),
            }
        }
    }
    svg.push_str(&format!("<text x=\"{left}\" y=\"{}\" fill=\"#555\">{}</text>\n</svg>\n", h - 16.0, escape(caption)));
    svg
}

/// The SVG header: size, white background, the bold title at `x`.
fn svg_open(width: f64, height: f64, x: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{x}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    )
}

/// Horizontal grid lines and labels at 0, 25, 50, 75, 100 %.
fn y_grid(svg: &mut String, left: f64, pw: f64, ys: &dyn Fn(f64) -> f64) {
    for k in 0..=4 {
        let a = k as f64 / 4.0;
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}</text>\n",
            left + pw,
            left - 6.0,
            ys(a) + 4.0,
            100.0 * a,
            y = ys(a)
        ));
    }
}

/// One legend line at (`x`, `y`): a swatch of `colour`, then `name`.
fn legend_entry(svg: &mut String, x: f64, y: f64, colour: &str, name: &str) {
    svg.push_str(&format!(
        "<rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
        y - 4.0,
        x + 20.0,
        y + 1.0,
        escape(name)
    ));
}

/// Line colours, in order of series.
const PALETTE: [&str; 7] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];

/// Validation accuracy against optimizer steps over a whole curriculum: each series is a name and its (step counted
/// from the start of training, accuracy) points; each stage's start (the step before its first) is marked with its
/// label. The first series is the main line; more (a mixed run's tasks) are drawn thinner, with a legend.
pub fn training_curve(series: &[(String, Vec<(u64, f64)>)], stages: &[(u64, String)], title: &str) -> String {
    let (left, top, pw, ph) = (60.0, 50.0, 560.0, 300.0);
    let last = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)).max().unwrap_or(1).max(1) as f64;
    let xs = |s: u64| left + pw * s as f64 / last;
    let ys = |a: f64| top + ph * (1.0 - a);
    let legend = series.len() > 1;
    // room on the right for the label of a stage that starts near the end, and for the legend
    let mut svg = svg_open(left + pw + if legend { 200.0 } else { 90.0 }, top + ph + 50.0, left, title);
    y_grid(&mut svg, left, pw, &ys);
    // short stages sit close together on the step axis: a label goes on the first row where it clears the one before
    let mut row_ends: Vec<f64> = Vec::new();
    for (start, label) in stages {
        let x = xs(*start);
        let width = 7.5 * label.chars().count() as f64;
        let row = row_ends.iter().position(|&end| x + 4.0 > end).unwrap_or(row_ends.len());
        if row == row_ends.len() {
            row_ends.push(0.0);
        }
        row_ends[row] = x + 4.0 + width;
        svg.push_str(&format!(
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#aaa\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{:.1}\" y=\"{}\" fill=\"#555\">{}</text>\n",
            top + ph,
            x + 4.0,
            top + 14.0 + 16.0 * row as f64,
            escape(label)
        ));
    }
    for (k, (name, points)) in series.iter().enumerate() {
        let (c, width, r) =
            (PALETTE[k % PALETTE.len()], if k == 0 { 2.0 } else { 1.2 }, if k == 0 { 2.5 } else { 2.0 });
        let path: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", xs(p.0), ys(p.1))).collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"{width}\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        // a dot per validation, so that a stage with a single check still shows it
        for p in points {
            svg.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{c}\"/>\n", xs(p.0), ys(p.1)));
        }
        if legend {
            legend_entry(&mut svg, left + pw + 96.0, top + 20.0 * k as f64, c, name);
        }
    }
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{}\" fill=\"#555\">validation accuracy % vs optimizer steps ({} in all)</text>\n</svg>\n",
        top + ph + 42.0,
        last
    ));
    svg
}

/// Mean accuracy over tasks against length (log scale), one line per results file.
pub fn lines(series: &[(String, Results)], title: &str) -> String {
    let mut lengths: Vec<usize> = series.iter().flat_map(|(_, r)| r.cells.iter().map(|c| c.length)).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let (left, top, pw, ph) = (60.0, 50.0, 520.0, 300.0);
    let xs = |l: usize| {
        let i = lengths.iter().position(|&x| x == l).unwrap_or(0) as f64;
        left + if lengths.len() > 1 { pw * i / (lengths.len() - 1) as f64 } else { pw / 2.0 }
    };
    let ys = |a: f64| top + ph * (1.0 - a);
    let mut svg = svg_open(left + pw + 180.0, top + ph + 50.0, left, title);
    y_grid(&mut svg, left, pw, &ys);
    for l in &lengths {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            xs(*l),
            top + ph + 20.0,
            length_name(*l)
        ));
    }
    for (k, (name, r)) in series.iter().enumerate() {
        let c = PALETTE[k % PALETTE.len()];
        let points: Vec<(f64, f64)> = lengths
            .iter()
            .filter_map(|l| {
                let cells: Vec<f64> = r.cells.iter().filter(|c| c.length == *l).map(|c| c.accuracy).collect();
                (!cells.is_empty()).then(|| (xs(*l), ys(cells.iter().sum::<f64>() / cells.len() as f64)))
            })
            .collect();
        let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        for (x, y) in &points {
            svg.push_str(&format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{c}\"/>\n"));
        }
        legend_entry(&mut svg, left + pw + 16.0, top + 20.0 * k as f64, c, name);
    }
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{}\" fill=\"#555\">mean accuracy % over tasks vs context length (GPT-2 tokens)</text>\n</svg>\n",
        top + ph + 42.0
    ));
    svg
}

#[cfg(test)]
mod tests {
    use super::training_curve;

    /// The y of each stage label, in order.
    fn label_rows(svg: &str) -> Vec<f64> {
        svg.split("stroke-dasharray=\"4 3\"/><text ")
            .skip(1)
            .map(|t| t.split("y=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn close_stage_labels_take_separate_rows_and_every_validation_gets_a_dot() {
        let points = vec![(100, 0.5), (990, 0.6), (1000, 0.7)];
        let stages = [(0, "≤1 seg".to_string()), (980, "≤256 seg".to_string()), (990, "≤512 seg".to_string())];
        let one = [("all".to_string(), points.clone())];
        let svg = training_curve(&one, &stages, "t");
        // the first label has the axis to itself; the last two stages start 10 steps apart and would overlap
        assert_eq!(label_rows(&svg), [64.0, 64.0, 80.0], "{svg}");
        let far = [(0, "≤1 seg".to_string()), (500, "≤2 seg".to_string())];
        assert_eq!(label_rows(&training_curve(&one, &far, "t")), [64.0, 64.0]);
        assert_eq!(svg.matches("<circle").count(), points.len());
        assert!(!svg.contains("width=\"14\""), "a single series needs no legend");
    }

    /// A mixed run's tasks get a line each, in their own colour, and a legend entry each.
    #[test]
    fn each_series_gets_a_line_and_a_legend_entry() {
        let series = [
            ("all tasks".to_string(), vec![(100, 0.5), (200, 0.6)]),
            ("qa1".to_string(), vec![(100, 0.9), (200, 0.95)]),
            ("qa2".to_string(), vec![(100, 0.1), (200, 0.25)]),
        ];
        let svg = training_curve(&series, &[(0, "≤1 seg".to_string())], "t");
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("width=\"14\"").count(), 3);
        for (name, colour) in [("all tasks", "#1f77b4"), ("qa1", "#d62728"), ("qa2", "#2ca02c")] {
            assert!(svg.contains(&format!(">{name}</text>")), "{name} in the legend");
            assert!(svg.contains(&format!("stroke=\"{colour}\"")), "{colour} used");
        }
    }
}
