# Generated package: see scripts/generate_protos. Do not edit.
