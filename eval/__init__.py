"""Success-rate evaluation, episode replay and plots."""
