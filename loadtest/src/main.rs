//! The Parley load-test harness (see issue 5; not yet built).

fn main() {
    eprintln!("parley-loadtest: not yet implemented");
    std::process::exit(2);
}
