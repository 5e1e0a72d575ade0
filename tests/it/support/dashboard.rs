//! The dashboard as a browser without JavaScript uses it: a session cookie, forms posted
//! with the CSRF token read from the page, redirects followed by hand (so each Set-Cookie
//! is kept).

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use super::TestApp;

pub const OWNER_EMAIL: &str = "owner@arcade.test";
pub const OWNER_PASSWORD: &str = "violet-harbour-lantern-42";

/// One signed-in (or not yet) browser.
pub struct Dash {
    pub base: String,
    http: reqwest::Client,
    cookie: Option<String>,
    /// The CSRF token of the last page seen.
    pub csrf: Option<String>,
}

/// A page as the browser got it after redirects.
pub struct Page {
    pub status: u16,
    /// The path of the final page (after redirects).
    pub path: String,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

fn csrf_of(body: &str) -> Option<String> {
    let at = body.find("name=\"csrf_token\" value=\"")?;
    let rest = &body[at + "name=\"csrf_token\" value=\"".len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

impl Dash {
    pub fn new(app: &TestApp) -> Self {
        Self {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            csrf: None,
        }
    }

    fn keep_cookie(&mut self, res: &reqwest::Response) {
        for v in res.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            if let Some(pair) = v.split(';').next() {
                if pair.starts_with("cp_session=") {
                    self.cookie = if pair == "cp_session=" {
                        None
                    } else {
                        Some(pair.to_owned())
                    };
                }
            }
        }
    }

    async fn follow(&mut self, mut res: reqwest::Response) -> Page {
        let mut path = res.url().path().to_owned();
        for _ in 0..5 {
            self.keep_cookie(&res);
            if !res.status().is_redirection() {
                break;
            }
            let to = res.headers()[LOCATION].to_str().unwrap().to_owned();
            path = to.split('?').next().unwrap().to_owned();
            res = self.send(self.http.get(format!("{}{to}", self.base))).await;
        }
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.text().await.unwrap();
        if let Some(t) = csrf_of(&body) {
            self.csrf = Some(t);
        }
        Page {
            status,
            path,
            body,
            headers,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let req = match &self.cookie {
            Some(c) => req.header(COOKIE, c),
            None => req,
        };
        req.send().await.unwrap()
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let res = self
            .send(self.http.get(format!("{}{path}", self.base)))
            .await;
        self.follow(res).await
    }

    /// Posts `fields` plus the CSRF token of the last page.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all: Vec<(&str, String)> =
            fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        if let Some(t) = &self.csrf {
            all.push(("csrf_token", t.clone()));
        }
        self.post_raw(path, &all).await
    }

    /// Posts exactly `fields` (no token added).
    pub async fn post_raw(&mut self, path: &str, fields: &[(&str, String)]) -> Page {
        let res = self
            .send(self.http.post(format!("{}{path}", self.base)).form(fields))
            .await;
        self.follow(res).await
    }

    pub async fn login(&mut self, email: &str, password: &str) -> Page {
        self.get("/admin/login").await;
        self.post("/admin/login", &[("email", email), ("password", password)])
            .await
    }
}

impl TestApp {
    /// Creates the owner through the setup link and returns their signed-in browser.
    pub async fn owner(&self) -> Dash {
        let url = self
            .setup_url
            .clone()
            .expect("a fresh app prints a setup link");
        let path = &url[url.find("/setup").unwrap()..];
        let mut d = Dash::new(self);
        let page = d.get(path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let token = path.split("token=").nth(1).unwrap().to_owned();
        let page = d
            .post(
                "/setup",
                &[
                    ("token", &token),
                    ("email", OWNER_EMAIL),
                    ("password", OWNER_PASSWORD),
                    ("confirm", OWNER_PASSWORD),
                ],
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(page.path, "/admin");
        d
    }

    /// Adds a user through the owner's users page; returns that user's signed-in browser.
    pub async fn add_user(&self, owner: &mut Dash, email: &str, role: &str) -> Dash {
        owner.get("/admin/users").await;
        let page = owner
            .post(
                "/admin/users",
                &[
                    ("email", email),
                    ("role", role),
                    ("password", OWNER_PASSWORD),
                    ("confirm", OWNER_PASSWORD),
                ],
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let mut d = Dash::new(self);
        let page = d.login(email, OWNER_PASSWORD).await;
        assert_eq!(page.status, 200, "{}", page.body);
        d
    }
}
