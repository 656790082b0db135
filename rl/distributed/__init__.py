"""What runs in Ray actors and how the driver reaches them: rollout replicas, learner ranks, reward
actors, and moving weights from the learner to the rollout."""
