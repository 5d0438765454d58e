"""Model ids: the slug of a Hugging Face id (lowercase, `/` and `.` become `-`)."""


def slugify(hf_id: str) -> str:
    """`ISTA-DASLab/gemma-3-27b-it-GPTQ-4b-128g` -> `ista-daslab-gemma-3-27b-it-gptq-4b-128g`."""
    return hf_id.lower().replace("/", "-").replace(".", "-")
