"""What leaves the run: the model card, the plots and the push to the Hub."""
