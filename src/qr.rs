//! QR codes for stickers: high error correction (survives scratches and dirt on a
//! cabinet) and the standard 4-module quiet zone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Svg => "image/svg+xml",
            Self::Png => "image/png",
        }
    }
}

/// Rendered stickers, kept so a sheet of them costs one render per cabinet. Rendering runs
/// on the blocking pool: a PNG takes milliseconds, which must not stall a web worker that
/// is also answering Stripe.
#[derive(Clone, Default)]
pub struct QrCache {
    images: Arc<Mutex<HashMap<(String, Format), Bytes>>>,
}

/// Distinct images kept; past it the cache starts over (stickers are few and re-rendered
/// cheaply, so an LRU would buy nothing).
const CACHE_MAX: usize = 512;

impl QrCache {
    pub async fn render(&self, data: String, format: Format) -> Result<Bytes, String> {
        let key = (data, format);
        if let Some(hit) = self.images.lock().expect("qr cache").get(&key) {
            return Ok(hit.clone());
        }
        let data = key.0.clone();
        let image: Bytes = tokio::task::spawn_blocking(move || match format {
            Format::Svg => svg(&data).map(Bytes::from),
            Format::Png => png(&data, 10).map(Bytes::from),
        })
        .await
        .map_err(|e| format!("QR render task failed: {e}"))??;
        let mut images = self.images.lock().expect("qr cache");
        if images.len() >= CACHE_MAX {
            images.clear();
        }
        images.insert(key, image.clone());
        Ok(image)
    }
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
