//! The cluster screen.
//!
//! Reading nodes and pods needs a Kubernetes client, which the dashboard does not carry: it
//! reads the raibid API only, so that it works the same against any server. This screen says
//! where the cluster configuration is and where to look instead.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use crossterm::event::Event;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::{Component, EventResult};

/// Where the Kubernetes configuration is, as found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kubeconfig {
    Found(PathBuf),
    /// Named (by option or `$KUBECONFIG`) but not there.
    Missing(PathBuf),
    /// Not named, and not at `~/.kube/config`.
    Absent,
}

impl Kubeconfig {
    /// `explicit`, else the first path of `$KUBECONFIG`, else `~/.kube/config`; checked for
    /// existence once, at start, so drawing never touches the file system.
    pub fn locate(explicit: Option<PathBuf>) -> Self {
        let named = explicit.or_else(|| {
            std::env::var_os("KUBECONFIG")
                .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
        });
        match named {
            Some(path) if path.exists() => Kubeconfig::Found(path),
            Some(path) => Kubeconfig::Missing(path),
            None => match std::env::var_os("HOME") {
                Some(home) => {
                    let path = PathBuf::from(home).join(".kube").join("config");
                    if path.exists() {
                        Kubeconfig::Found(path)
                    } else {
                        Kubeconfig::Absent
                    }
                }
                None => Kubeconfig::Absent,
            },
        }
    }
}

pub(crate) struct ClusterView {
    kubeconfig: Kubeconfig,
}

impl ClusterView {
    pub fn new(kubeconfig: Kubeconfig) -> Self {
        Self { kubeconfig }
    }
}

impl Component for ClusterView {
    fn handle_event(&mut self, _event: &Event) -> EventResult {
        EventResult::Ignored
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, _now: DateTime<Utc>) {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let dim = Style::new().fg(Color::DarkGray);
        let mut lines = match &self.kubeconfig {
            Kubeconfig::Found(path) => vec![
                Line::from(vec![
                    Span::styled("cluster view: run ", bold),
                    Span::styled("raibid status", bold.fg(Color::Cyan)),
                    Span::styled(" for cluster state", bold),
                ]),
                Line::from(Span::styled(format!("kubeconfig: {}", path.display()), dim)),
            ],
            Kubeconfig::Missing(path) => vec![
                Line::from(Span::styled("no cluster configured", bold)),
                Line::from(Span::styled(
                    format!("kubeconfig: {} (not found)", path.display()),
                    dim,
                )),
            ],
            Kubeconfig::Absent => vec![
                Line::from(Span::styled("no cluster configured", bold)),
                Line::from(Span::styled(
                    "kubeconfig: none ($KUBECONFIG unset, ~/.kube/config absent)",
                    dim,
                )),
            ],
        };
        lines.push(Line::default());
        lines.push(Line::from(Span::styled(
            "Agents and queues of any cluster show on tabs 3 and 4: the server reports them.",
            dim,
        )));
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" Cluster ")),
            area,
        );
    }
}
