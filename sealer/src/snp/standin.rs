//! The INSECURE software SNP stand-in (filled in below).
