"""Tests for pretrainctl.scaling."""
