# atoms.ex is generated from the sidecar's op table (`npm run docs:ops`) and compared byte for byte
# with the generator's output by test/atoms_test.exs: the generator owns its layout.
[
  inputs: ["{mix,.formatter}.exs", "test/**/*.{ex,exs}"] ++ (Path.wildcard("lib/**/*.{ex,exs}") -- ["lib/prompt_engine/atoms.ex"]),
  line_length: 160
]
