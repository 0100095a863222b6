//! HTTP boot scripts, static files and the JSON API (to be written).
