//! A player's phone: keeps its cookies (the pay cookie, the wallet cookie) across requests
//! and does not follow redirects, so a test sees where each answer sends it.

use std::collections::BTreeMap;

use super::TestApp;

pub struct Phone {
    base: String,
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// The value of the hidden input `name` in `html`.
pub fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

impl Phone {
    pub fn new(app: &TestApp) -> Self {
        Self {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    /// Another phone that shares this one's cookies (the same player on two tabs).
    pub fn twin(&self) -> Self {
        Self {
            base: self.base.clone(),
            http: self.http.clone(),
            cookies: self.cookies.clone(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn answer(&mut self, res: reqwest::Response) -> Answer {
        for v in res.headers().get_all("set-cookie") {
            let pair = v.to_str().unwrap().split(';').next().unwrap().to_owned();
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        Answer {
            status: res.status().as_u16(),
            location: res
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: res.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let res = self
            .http
            .get(url)
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.answer(res).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, String)]) -> Answer {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Cookie", self.cookie_header())
            .form(fields)
            .send()
            .await
            .unwrap();
        self.answer(res).await
    }
}
