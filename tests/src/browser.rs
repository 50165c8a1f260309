//! A browser as far as a sign-in needs one.

/// A browser, as far as a sign-in needs one: follows redirects and keeps cookies.
pub struct Browser {
    client: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: Default::default(),
        }
    }

    /// One request with this browser's cookies; keeps the cookies it sets. Returns the
    /// status, the `Location` and the body.
    pub async fn step(&mut self, url: &str) -> (u16, Option<String>, String) {
        let req = self.client.get(url);
        self.send(req).await
    }

    /// A JSON POST, as a page's `fetch` sends it, with this browser's cookies.
    pub async fn post_json(&mut self, url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let req = self.client.post(url).json(body);
        let (status, _, text) = self.send(req).await;
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    async fn send(&mut self, mut req: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", jar.join("; "));
        }
        let resp = req.send().await.expect("request");
        for v in resp.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap_or("");
            let first = text.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                let expired = text.to_ascii_lowercase().contains("max-age=0");
                if v.is_empty() || expired {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        (status, location, resp.text().await.unwrap_or_default())
    }

    /// Follows redirects from `url` to a page that is not one; returns its URL, status
    /// and body.
    pub async fn visit(&mut self, url: &str) -> (String, u16, String) {
        let mut url = url.to_string();
        for _ in 0..10 {
            let (status, location, body) = self.step(&url).await;
            match location {
                Some(next) if (300..400).contains(&status) => url = next,
                _ => return (url, status, body),
            }
        }
        panic!("too many redirects");
    }

    pub fn cookies(&self) -> std::collections::BTreeMap<String, String> {
        self.cookies.clone()
    }

    pub fn set_cookies(&mut self, cookies: std::collections::BTreeMap<String, String>) {
        self.cookies = cookies;
    }
}
