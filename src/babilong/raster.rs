//! The heatmap as a PNG, for places that take no SVG: cells in the heatmap's colours, task and length labels and
//! cell values drawn with a built-in 5×7 bitmap font (digits and the few letters the labels use), so no system
//! fonts are needed. Titles and legends stay in the SVG.

use super::eval::{length_name, Results};
use super::plot::{axes, colour_rgb};

/// 5×7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(c: char) -> Option<[u8; 7]> {
    Some(match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'q' => [0x00, 0x00, 0x0F, 0x11, 0x0F, 0x01, 0x01],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ' ' => [0; 7],
        _ => return None,
    })
}

const SCALE: usize = 2;
const ADVANCE: usize = 6 * SCALE;

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>, // RGB
}

impl Canvas {
    fn rect(&mut self, x0: usize, y0: usize, w: usize, h: usize, rgb: [u8; 3]) {
        for y in y0..(y0 + h).min(self.h) {
            for x in x0..(x0 + w).min(self.w) {
                self.px[(y * self.w + x) * 3..][..3].copy_from_slice(&rgb);
            }
        }
    }

    /// Text with its left edge at `x`, top at `y`; characters without a glyph are drawn as blanks.
    fn text(&mut self, x: usize, y: usize, s: &str) {
        for (i, c) in s.chars().enumerate() {
            let rows = glyph(c).unwrap_or([0; 7]);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.rect(x + i * ADVANCE + col * SCALE, y + r * SCALE, SCALE, SCALE, [0, 0, 0]);
                    }
                }
            }
        }
    }
}

fn width(s: &str) -> usize {
    s.chars().count() * ADVANCE
}

/// The heatmap of one results file as PNG bytes.
pub fn heatmap_png(r: &Results) -> Vec<u8> {
    let (tasks, lengths) = axes(r);
    let (cw, ch, left, top) = (64, 32, 60, 30);
    let mut c = Canvas { w: left + cw * lengths.len() + 10, h: top + ch * tasks.len() + 10, px: Vec::new() };
    c.px = vec![255; c.w * c.h * 3];
    for (j, l) in lengths.iter().enumerate() {
        let name = length_name(*l);
        c.text(left + cw * j + (cw - width(&name)) / 2, top - 7 * SCALE - 6, &name);
    }
    for (i, t) in tasks.iter().enumerate() {
        let y = top + ch * i;
        c.text(left - width(t) - 8, y + (ch - 7 * SCALE) / 2, t);
        for (j, l) in lengths.iter().enumerate() {
            let x = left + cw * j;
            match r.cells.iter().find(|cell| &cell.task == t && cell.length == *l) {
                Some(cell) => {
                    c.rect(x + 1, y + 1, cw - 2, ch - 2, colour_rgb(cell.accuracy));
                    let v = format!("{:.0}", 100.0 * cell.accuracy);
                    c.text(x + (cw - width(&v)) / 2, y + (ch - 7 * SCALE) / 2, &v);
                }
                None => c.rect(x + 1, y + 1, cw - 2, ch - 2, [238, 238, 238]),
            }
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, c.w as u32, c.h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().expect("in-memory PNG");
    writer.write_image_data(&c.px).expect("in-memory PNG");
    drop(writer);
    out
}
