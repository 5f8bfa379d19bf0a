//! The console's files, embedded in the binary at build time (`assets/`): one HTML shell for
//! every page (its title and script filled in here, from this module's constants only), the
//! ES modules, and the style sheet.

/// A console page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The login form.
    Login,
    /// Every device.
    Fleet,
    /// One device's plots and history.
    Device,
    /// Rollouts: create, watch, steer.
    Rollouts,
    /// The registry and evaluation reports.
    Models,
    /// Hard examples to confirm or correct.
    Feedback,
}

impl Page {
    /// Its name: `data-page` on the body, and its script `NAME.js`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Fleet => "fleet",
            Self::Device => "device",
            Self::Rollouts => "rollouts",
            Self::Models => "models",
            Self::Feedback => "feedback",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Login => "Log in",
            Self::Fleet => "Fleet",
            Self::Device => "Device",
            Self::Rollouts => "Rollouts",
            Self::Models => "Models",
            Self::Feedback => "Feedback",
        }
    }
}

const SHELL: &str = include_str!("assets/shell.html");

/// The embedded files: name, content type, bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    ("common.js", JS, include_str!("assets/common.js")),
    ("login.js", JS, include_str!("assets/login.js")),
    ("fleet.js", JS, include_str!("assets/fleet.js")),
    ("device.js", JS, include_str!("assets/device.js")),
    ("plot.js", JS, include_str!("assets/plot.js")),
    ("rollouts.js", JS, include_str!("assets/rollouts.js")),
    ("models.js", JS, include_str!("assets/models.js")),
    ("feedback.js", JS, include_str!("assets/feedback.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The page's HTML.
pub fn shell(page: Page) -> String {
    SHELL
        .replace("{{title}}", page.title())
        .replace("{{page}}", page.name())
}

/// An embedded file by name: its content type and text.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, body)| (*t, *body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_its_script_and_no_inline_one() {
        for p in [
            Page::Login,
            Page::Fleet,
            Page::Device,
            Page::Rollouts,
            Page::Models,
            Page::Feedback,
        ] {
            let html = shell(p);
            let script = format!("{}.js", p.name());
            assert!(get(&script).is_some(), "{script}");
            assert!(
                html.contains(&format!("src=\"/console/assets/{script}\"")),
                "{html}"
            );
            assert!(!html.contains("{{"), "{html}");
            assert_eq!(
                html.matches("<script").count(),
                1,
                "one script, from a file"
            );
        }
        for (name, _, body) in FILES {
            if name.ends_with(".js") {
                assert!(
                    !body.contains("innerHTML"),
                    "{name}: text only, never innerHTML"
                );
            }
        }
    }
}
