//! HPACK (RFC 7541): placeholder, written in the next commit.
