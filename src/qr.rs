//! QR codes for stickers: high error correction (survives scratches and dirt on a
//! cabinet) and the standard 4-module quiet zone.

use qrcode::{Color, EcLevel, QrCode};

const QUIET: usize = 4;

fn code(data: &str) -> Result<QrCode, String> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::H)
        .map_err(|e| format!("cannot encode as QR: {e}"))
}

pub fn svg(data: &str) -> Result<String, String> {
    Ok(code(data)?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// A black-on-white 8-bit greyscale PNG, `scale` pixels per module.
pub fn png(data: &str, scale: usize) -> Result<Vec<u8>, String> {
    let code = code(data)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * scale;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c == Color::Dark {
            let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
            for y in my * scale..(my + 1) * scale {
                pixels[y * side + mx * scale..y * side + (mx + 1) * scale].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn png_and_svg_render() {
        let url = "https://arcade.example/p/cab-1";
        let png = super::png(url, 8).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(super::svg(url).unwrap().contains("<svg"));
    }
}
