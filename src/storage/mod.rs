//! The file store seam: S3 or local disk behind one interface (filled in by the
//! attachments work). Nothing stores files yet.
