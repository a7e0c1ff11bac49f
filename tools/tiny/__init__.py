"""The bundled tiny model's tooling: procedural data, phrasings, tokenizer, trainer, judge and evaluation."""
