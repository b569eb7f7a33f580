"""musicpetl: parameter-efficient transfer learning of music foundation models, as a DVC pipeline."""
