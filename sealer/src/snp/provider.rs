//! SNP report providers (filled in below).
