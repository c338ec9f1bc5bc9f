"""chgdata/sources"""
