"""Plain ``nn.Module`` building blocks of the landscape studies (PINN MLP, ResNet family)."""
