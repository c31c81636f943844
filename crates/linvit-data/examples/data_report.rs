//! Prints what `linvit data inspect` and `linvit bench data` will: a dataset summary, a sample
//! grid and decode+augment throughput.
//!
//! `cargo run --release -p linvit-data --example data_report -- KIND [PATH|-] [IMAGE_SIZE] [GRID.png]`
//! `cargo run --release -p linvit-data --example data_report -- export DIR SIZE TRAIN VAL`
//! writes the synthetic set as a JPEG image folder (e.g. 224² JPEGs for the decode benchmark).

use linvit_data::source::synthetic::{export_image_folder, ExportFormat};
use linvit_data::{inspect, throughput, write_sample_grid, DataConfig, DataKind, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    if arg(0) == Some("export") {
        let dir = arg(1).ok_or("export DIR SIZE TRAIN VAL")?;
        let nums: Vec<usize> = (2..5)
            .map(|i| arg(i).unwrap_or("0").parse())
            .collect::<Result<_, _>>()?;
        let n = export_image_folder(
            dir.as_ref(),
            0,
            10,
            nums[0],
            nums[1],
            nums[2],
            ExportFormat::Jpeg,
        )?;
        println!("wrote {n} JPEGs under {dir}");
        return Ok(());
    }
    let kind: DataKind = serde_json::from_str(&format!("\"{}\"", arg(0).unwrap_or("synthetic")))?;
    let path = arg(1).filter(|p| *p != "-").map(Into::into);
    let image_size = arg(2).map_or(Ok(32), str::parse)?;
    let config = DataConfig {
        kind,
        path,
        image_size,
        ..DataConfig::default()
    };
    println!("{}", inspect(&config, Some(2000))?);
    if let Some(grid) = arg(3) {
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
