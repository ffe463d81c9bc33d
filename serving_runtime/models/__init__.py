"""The model library: the model-folder format (`folder`), one runtime per framework
(`runtimes`), inference on request bodies (`inference`, `features`) and the compiled tree
evaluators (`trees`). No HTTP, no server settings: the client's in-process mode uses it
as is."""
