use std::sync::Arc;

use crate::auth::TokenService;
use crate::config::Settings;
use crate::db::Db;
use crate::db::messages::MessageParts;
use crate::db::models::{FileUpload, FileView, Message};
use crate::links::DownloadLinks;
use crate::realtime::EventBus;

/// What every handler can reach, shared as `web::Data<AppState>`.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub tokens: TokenService,
    pub links: DownloadLinks,
    pub events: EventBus,
}

impl AppState {
    /// A file as `viewer` sees it: with a download link issued to them.
    pub fn file_view(&self, base_url: &str, viewer_id: i32, file: &FileUpload) -> FileView {
        let (url, expires_at) = self.links.issue(base_url, file.id, viewer_id);
        FileView::new(file, url, expires_at)
    }

    /// A message with its files as `viewer` sees them.
    pub fn message_view(&self, base_url: &str, viewer_id: i32, parts: MessageParts) -> Message {
        let (row, username, files) = parts;
        let files = files
            .iter()
            .map(|f| self.file_view(base_url, viewer_id, f))
            .collect();
        Message::new(row, username, files)
    }
}
