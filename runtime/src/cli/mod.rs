//! The `cocoon` command line for people: talks CRI to cocoond.
