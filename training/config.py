"""Training hyper-parameters: one dataclass, loadable from YAML (training/configs/*.yaml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from ragtune.registry import EXPERIMENT
from ragtune.settings import load_settings


@dataclass
class SftConfig:
    train_file: str = ""
    validation_file: str = ""
    output_dir: str = ""  # "" = $RAGTUNE_HOME/runs/standalone
    base_model: str = ""  # Hugging Face id or local path; "" = the bundled SmolLM2-135M-Instruct
    models_dir: str = ""  # where the bundled base model is converted once; "" = $RAGTUNE_HOME/models
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 0
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 wins over epochs
    max_minutes: float = 0.0  # > 0: stop before a step would end past this wall-clock budget (the schedule is not stretched)
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 1024
    # padding-free needs a flash-attention kernel (GPU); on CPU, batches grouped by length waste little padding
    padding_free: bool = False
    packing: bool = False
    # "stratified": "not covered" examples spread evenly, batches grouped by length in small windows
    # (training/order.py); "length": transformers' length-grouped sampler; "random": shuffled
    batch_order: str = "stratified"
    gradient_checkpointing: bool = False
    lead_tokens: int = 0  # the first N answer tokens (JSON opening + the answer-or-abstain decision) ...
    lead_weight: float = 1.0  # ... weigh this much in the loss (1: a plain per-token mean)
    eval_at_end: bool = True
    seed: int = 0
    generation_check_prompts: int = 8  # validation prompts answered at the end; a collapsed adapter fails the run (0: off)
    generation_check_every: int = 0  # also answer them every N steps: a learning curve of behaviour in MLflow (0: end only)
    dtype: str = "auto"  # ragtune.precision: bf16 autocast where the hardware computes bf16 natively
    # tracking
    tracking_uri: str = ""  # "" = RAGTUNE_MLFLOW_TRACKING_URI or sqlite in the data home
    artifact_location: str = ""  # "" = $RAGTUNE_HOME/mlartifacts, or the tracking server's own store
    experiment: str = EXPERIMENT
    run_name: str = ""
    registered_model: str = ""  # "" = log only, do not register
    version_tags: dict[str, str] = field(default_factory=dict)
    run_tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        from training.order import ORDERS

        if self.batch_order not in ORDERS:
            raise ValueError(f"batch_order {self.batch_order!r} is not one of {', '.join(ORDERS)}")
        if self.batch_order == "stratified" and self.packing:
            raise ValueError("batch_order stratified orders whole examples, and packing merges them: set batch_order: random")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> SftConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown training settings {', '.join(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def resolved(self) -> SftConfig:
        """Empty paths and endpoints filled from the settings (RAGTUNE_HOME ...), as the rest of ragtune uses them."""
        s = load_settings()
        tracking_uri = self.tracking_uri or s.tracking_uri
        return replace(
            self,
            output_dir=self.output_dir or str(s.home_dir / "runs" / "standalone"),
            models_dir=self.models_dir or str(s.models_dir),
            tracking_uri=tracking_uri,
            artifact_location=self.artifact_location or str(s.artifact_root(tracking_uri) or ""),
            base_model=self.base_model or s.base_model,
        )

    def lora_config(self):
        """The PEFT LoRA configuration these settings describe (a causal LM)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.target_modules),
            task_type="CAUSAL_LM",
        )

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(asdict(self), sort_keys=False))
        return path
