//! Progress of long commands on a terminal (indicatif): drawn on stderr only when it is a terminal, so
//! logs, pipes and CI output stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` steps named `what` (e.g. "payments"), or a spinner counting them when the total is not
/// known, prefixed by `task`.
pub fn bar(task: &str, total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(&format!(
                "{task} {{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {what}, eta {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(&format!("{task} {{elapsed_precise}} {{spinner}} {{human_pos}} {what}"))
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}
