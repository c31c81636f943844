//! Prints what `linvit data inspect` and `linvit bench data` will: a dataset summary, a sample
//! grid and decode+augment throughput.
//!
//! `cargo run --release -p linvit-data --example data_report -- KIND [PATH] [IMAGE_SIZE] [GRID.png]`

use linvit_data::{inspect, throughput, write_sample_grid, DataConfig, DataKind, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind: DataKind =
        serde_json::from_str(&format!("\"{}\"", args.first().map_or("synthetic", |s| s)))?;
    let path = args.get(1).filter(|p| *p != "-").map(Into::into);
    let image_size = args.get(2).map_or(Ok(32), |s| s.parse())?;
    let config = DataConfig {
        kind,
        path,
        image_size,
        ..DataConfig::default()
    };
    println!("{}", inspect(&config, Some(2000))?);
    if let Some(grid) = args.get(3) {
        write_sample_grid(&config, Split::Train, 6, 10, grid.as_ref())?;
        let val_grid = grid.replace(".png", "-val.png");
        write_sample_grid(&config, Split::Val, 6, 10, val_grid.as_ref())?;
        println!("wrote {grid} (train, augmented) and {val_grid} (val)");
    }
    for split in [Split::Train, Split::Val] {
        println!("{}", throughput(&config, split, 4096, 128)?);
    }
    Ok(())
}
