"""How it is used: the generator (windows, batches, decoding, order), the CTranslate2 backend, resumable output,
and the file jobs behind `hf-encdec generate` and `hf-encdec evaluate`."""
