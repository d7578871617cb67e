"""Training: the loop (trainer.py) and what it is made of: one step (step.py), optimizers (optim/), the LR
schedule, checkpoint saving, guards, auto-batch and distributed wrapping. Import the module you need; this
package imports nothing, so that `gpt2lab.training.optim` does not load the trainer."""
