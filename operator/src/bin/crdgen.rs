//! Prints the Shop CRD as YAML (same as `shop-operator crd`): `cargo run -p shop-operator --bin crdgen > crds/shop.yaml`.

fn main() -> anyhow::Result<()> {
    print!("{}", shop_operator::crd_yaml()?);
    Ok(())
}
